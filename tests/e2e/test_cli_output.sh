#!/usr/bin/env bash
# Output that cannot be written is a failure (exit 1, "baton: writing output: <reason>"), not
# a silent success; a run that generates nothing reports no time to first token; the default
# model path never depends on the working directory (issue 8).
source "$(dirname "$0")/lib.sh"
need_model
export BATON_MODEL="$MODEL"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# write_fails HOW PATTERN -- ARGS...: runs baton ARGS with stdout sent to /dev/full (HOW=full)
# or closed (HOW=closed); wants exit 1 and stderr matching PATTERN.
write_fails() {
    local how=$1 pattern=$2
    shift 3
    local rc
    if [[ $how == full ]]; then
        "$BATON" "$@" >/dev/full 2>"$tmp/err"
    else
        "$BATON" "$@" >&- 2>"$tmp/err"
    fi
    rc=$?
    if [[ $rc -eq 1 ]] && grep -qE -- "$pattern" "$tmp/err"; then
        pass "baton $* >$how -> 1"
    else
        fail "baton $* >$how -> $rc (want 1, /$pattern/): $(cat "$tmp/err")"
    fi
}
gen=(generate --prompt hi --max-tokens 4 --seed 1 --threads 2)
write_fails full "baton: writing output: No space left on device" -- "${gen[@]}"
write_fails full "baton: writing output: No space left on device" -- "${gen[@]}" --n 2
write_fails full "baton: writing output: No space left on device" -- tokenize --prompt hi
write_fails full "baton: writing output: No space left on device" -- info
write_fails closed "baton: writing output: Bad file descriptor" -- "${gen[@]}"
write_fails closed "baton: writing output: Bad file descriptor" -- "${gen[@]}" --n 2
write_fails closed "baton: writing output: Bad file descriptor" -- tokenize --prompt hi
write_fails closed "baton: writing output: Bad file descriptor" -- info
# The streamed completion stops once stdout fails: nobody would read the rest.
"$BATON" generate --prompt hi --max-tokens 2000 --ignore-eos --threads 2 >/dev/full 2>"$tmp/err"
if grep -q "finish: cancelled" "$tmp/err"; then
    pass "generate to /dev/full stops early"
else
    fail "generate to /dev/full did not stop early: $(cat "$tmp/err")"
fi

# --max-tokens 0: no token, so no time to first token (it was printed negative).
"$BATON" generate --prompt hi --max-tokens 0 --threads 2 >"$tmp/out" 2>"$tmp/err"
rc=$?
if [[ $rc -eq 0 ]] && ! grep -qE -- "(^|[ :(])-[0-9]" "$tmp/err" && grep -q "generation: 0 tokens, finish: length" "$tmp/err"; then
    pass "generate --max-tokens 0 -> 0, no time to first token"
else
    fail "generate --max-tokens 0 -> $rc: $(cat "$tmp/err")"
fi

# HOME unset: the default model path is the user's home from the password database, never
# relative to the working directory.
mkdir -p "$tmp/cwd/.cache/baton"
cp /dev/null "$tmp/cwd/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf"
out=$(cd "$tmp/cwd" && env -u HOME -u BATON_MODEL -u BATON_CACHE "$BATON" info 2>&1)
home=$(getent passwd "$(id -u)" | cut -d: -f6)
if grep -qE "(^model: +|cannot open )$home/\.cache/baton/" <<<"$out" && ! grep -q "^\./" <<<"$out"; then
    pass "HOME unset: default model under $home"
else
    fail "HOME unset: $out"
fi
# The same for deploy/fetch-model.sh (the model is cached: it only prints the path).
out=$(cd "$tmp/cwd" && env -u HOME -u BATON_CACHE bash "$E2E_DIR/../../deploy/fetch-model.sh" 2>&1)
if [[ $out == "$home/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf" ]]; then
    pass "fetch-model.sh with HOME unset: $out"
elif [[ $out == *"has no home directory; set BATON_CACHE" || $out == /*/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf ]]; then
    pass "fetch-model.sh with HOME unset: absolute or refused ($out)"
else
    fail "fetch-model.sh with HOME unset: $out"
fi
# A model name it does not know: exit 2 naming the ones it does, nothing downloaded.
rc=0
out=$(BATON_CACHE=$tmp/cache bash "$E2E_DIR/../../deploy/fetch-model.sh" llama-9000 2>&1) || rc=$?
if [[ $rc -eq 2 && $out == *"unknown model 'llama-9000' (known: smollm2, gemma3-270m)"* && ! -e $tmp/cache ]]; then
    pass "fetch-model.sh with an unknown name: $out"
else
    fail "fetch-model.sh with an unknown name: rc $rc: $out"
fi
finish
