#!/usr/bin/env bash
# Bad command lines end with exit status 2 and a message naming what is wrong; nothing runs.
source "$(dirname "$0")/lib.sh"

# expect STATUS PATTERN -- ARGS...: runs baton ARGS, checks the exit status and that stderr
# matches PATTERN.
expect() {
    local want=$1 pattern=$2
    shift 3
    local err rc
    err=$("$BATON" "$@" 2>&1 >/dev/null)
    rc=$?
    if [[ $rc -eq $want ]] && grep -qE -- "$pattern" <<<"$err"; then
        pass "baton $* -> $rc"
    else
        fail "baton $* -> $rc (want $want, /$pattern/): $err"
    fi
}

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
"$BATON" generate --help >/dev/null 2>&1 && pass "generate --help -> 0" || fail "generate --help"
finish
