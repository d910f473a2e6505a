#!/usr/bin/env bash
# Bad command lines end with exit status 2 and a message naming what is wrong; nothing runs.
source "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'not a gguf file at all, just text\n' >"$tmp/bad.gguf"

expect 2 "unknown command 'frobnicate'" -- frobnicate
expect 2 "unknown flag '--frobnicate'" -- generate --frobnicate --prompt hi
expect 2 "--max-tokens: 'many' is not an integer" -- generate --prompt hi --max-tokens many
expect 2 "--temperature: -1 is outside" -- generate --prompt hi --temperature -1
expect 2 "--top-p: 1.5 is outside" -- generate --prompt hi --top-p 1.5
expect 2 "--prompt needs a value" -- generate --prompt
expect 2 "exactly one of --prompt and --file" -- generate
expect 2 "cannot open $tmp/missing.gguf: No such file" -- generate --model "$tmp/missing.gguf" --prompt hi
expect 2 "gguf" -- info --model "$tmp/bad.gguf"
expect 2 "cannot open '$tmp/nope.txt'" -- perplexity --file "$tmp/nope.txt"
expect 2 "--ctx: 4 is outside" -- perplexity --file /etc/hostname --ctx 4
expect 2 "--threads: 0 is outside" -- bench --threads 0
expect 2 "unexpected argument 'stray'" -- tokenize stray
expect 2 "--numerics 'exact': not 'fast' or 'llamacpp'" -- generate --prompt hi --numerics exact
expect 2 "--numerics 'x': not 'fast' or 'llamacpp'" -- perplexity --file /etc/hostname --numerics x
# Values a stage would refuse after launch are refused here, naming the flag (issue 8).
expect 2 "--threads: 1024 is outside \[1, 256\]" -- generate --prompt hi --threads 1024
# A model whose llama.vocab_size disagrees with its tensors: refused before any stage starts.
if [[ -z ${BT_BUILD_DIR:-} || ! -x $BT_BUILD_DIR/tests/make_tiny_model ]]; then
    fail "BT_BUILD_DIR/tests/make_tiny_model is not built (BT_BUILD_DIR='${BT_BUILD_DIR:-}')"
elif "$BT_BUILD_DIR/tests/make_tiny_model" "$tmp/badvocab.gguf" --vocab-size 301 >/dev/null; then
    expect 2 "token_embd.weight has shape \[64, 300, 1, 1\], want \[64, 301\]" -- \
        generate --model "$tmp/badvocab.gguf" --prompt hi --stages 2
fi
# A request needs one sequence per completion or beam: more than --max-seqs is refused.
expect 2 "--n 4 needs 4 sequences at once, more than --max-seqs 1" -- generate --prompt hi --n 4 --max-seqs 1
expect 2 "--best-of 3 needs 3 sequences at once, more than --max-seqs 2" -- generate --prompt hi --best-of 3 --max-seqs 2
expect 2 "--beam-width 8 needs 8 sequences at once, more than --max-seqs 2" -- generate --prompt hi --beam-width 8 --max-seqs 2
# A FIFO as --model is refused at once (open would block until a writer came).
mkfifo "$tmp/fifo.gguf"
expect_quick() {
    local err rc
    err=$(timeout 20 "$BATON" "$@" 2>&1 >/dev/null)
    rc=$?
    if [[ $rc -eq 2 ]] && grep -q "is not a regular file" <<<"$err"; then
        pass "baton $* -> 2 without blocking"
    else
        fail "baton $* -> $rc (want 2, 'not a regular file'; 124 = blocked): $err"
    fi
}
expect_quick info --model "$tmp/fifo.gguf"
expect_quick generate --model "$tmp/fifo.gguf" --prompt hi
# A prompt file with a NUL byte: refused the same way by generate, tokenize and perplexity.
printf 'hello\0world\n' >"$tmp/nul.txt"
expect 2 "'$tmp/nul.txt' has a NUL byte at offset 5" -- generate --file "$tmp/nul.txt"
expect 2 "'$tmp/nul.txt' has a NUL byte at offset 5" -- tokenize --file "$tmp/nul.txt"
expect 2 "'$tmp/nul.txt' has a NUL byte at offset 5" -- perplexity --file "$tmp/nul.txt"
"$BATON" generate --help >/dev/null 2>&1 && pass "generate --help -> 0" || fail "generate --help"
finish
