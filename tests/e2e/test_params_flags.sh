#!/usr/bin/env bash
# The flags of the request-parameter table and the three parameters added with it, on the
# real model: --stop-token-id ends generation (finish stop) with the id not printed, and is
# banned before --min-tokens on the last stage; --include-stop-str keeps the matched stop
# string; --no-skip-special prints a control token's text; table names and the old aliases
# both work and their errors name the flag as typed.
source "$(dirname "$0")/lib.sh"

# Flag errors come before the model is opened: no model needed.
expect 2 "--repetition-penalty: 11 is outside" -- generate --prompt hi --repetition-penalty 11
expect 2 "--top-logprobs: 21 is outside" -- generate --prompt hi --top-logprobs 21
expect 2 "--min-p: 2 is outside" -- generate --prompt hi --min-p 2
expect 2 "--max-tokens: -1 is outside" -- generate --prompt hi --max-tokens -1
expect 2 "--stop-token-id: 'x' is not a token id" -- generate --prompt hi --stop-token-id x
expect 2 "--stop-token-id: '-3' is not a token id" -- generate --prompt hi --stop-token-id=-3
expect 2 "--stop-token-id needs a value" -- generate --prompt hi --stop-token-id
ids=()
for i in $(seq 17); do ids+=(--stop-token-id "$i"); done
expect 2 "--stop-token-id: more than 16 ids" -- generate --prompt hi "${ids[@]}"
expect 2 "--stop-token-id cannot be combined with --beam-width" -- \
    generate --prompt hi --beam-width 2 --stop-token-id 5
expect 2 "unknown flag|--include-stop-str-in-outpu" -- generate --prompt hi --include-stop-str-in-outpu
# (captured first: grep -q stops reading early, and under pipefail the writer's SIGPIPE
# would fail the pipeline when the text is longer than the pipe buffer)
help=$("$BATON" generate --help 2>&1)
grep -q -- "--no-skip-special-tokens" <<<"$help" &&
    pass "--help lists the table's flags" || fail "--help lacks --no-skip-special-tokens"

need_model
expect 2 "--stop-token-id: stop_token_ids\[0\] 49152 is outside \[0, 49152\)" -- \
    generate --model "$MODEL" --prompt hi --stop-token-id 49152
P="The capital of France is"
run() { "$BATON" generate --model "$MODEL" --prompt "$P" --temperature 0 --print-ids "$@"; }
out_ids() { sed -n 's/^output ids: *//p' <<<"$1"; }

# Greedy reference: its ids and text.
ref_err=$(run --max-tokens 12 --ignore-eos 2>&1 >/tmp/params_ref.$$)
ref=$(cat /tmp/params_ref.$$)
read -r -a ref_ids <<<"$(out_ids "$ref_err")"
rm -f /tmp/params_ref.$$
if [[ ${#ref_ids[@]} -ne 12 ]]; then
    fail "greedy reference: ${#ref_ids[@]} ids ($ref_err)"
    finish
    exit
fi

# --stop-token-id T (the 4th greedy id): the output is the ids before T's first occurrence,
# the finish is stop, and the text is a proper prefix of the reference (T not printed).
T=${ref_ids[3]}
first=0
while [[ ${ref_ids[$first]} != "$T" ]]; do first=$((first + 1)); done
err=$(run --max-tokens 12 --ignore-eos --stop-token-id 99 --stop-token-id "$T" 2>&1 >/tmp/params_got.$$)
got=$(cat /tmp/params_got.$$)
rm -f /tmp/params_got.$$
read -r -a got_ids <<<"$(out_ids "$err")"
if [[ "${got_ids[*]}" == "${ref_ids[*]:0:$first}" ]]; then
    pass "--stop-token-id $T: ids before it ($first of them)"
else
    fail "--stop-token-id $T: ids '${got_ids[*]}', want '${ref_ids[*]:0:$first}'"
fi
grep -q "finish: stop" <<<"$err" && pass "--stop-token-id: finish stop" || fail "finish: $err"
if [[ ${#got} -lt ${#ref} && $ref == "$got"* ]]; then pass "--stop-token-id: text before it"
else fail "--stop-token-id: text '$got' is not a proper prefix of '$ref'"; fi

# With --min-tokens past T's position, the last stage bans T until then: at least that many
# tokens, none of them T before the minimum.
err=$(run --max-tokens 12 --stop-token-id "$T" --min-tokens 6 2>&1 >/dev/null)
read -r -a got_ids <<<"$(out_ids "$err")"
banned_ok=1
for ((i = 0; i < 6 && i < ${#got_ids[@]}; i++)); do
    [[ ${got_ids[$i]} == "$T" ]] && banned_ok=0
done
if [[ ${#got_ids[@]} -ge 6 && $banned_ok -eq 1 ]]; then
    pass "--stop-token-id with --min-tokens 6: ${#got_ids[@]} tokens, $T not among the first 6"
else
    fail "--stop-token-id with --min-tokens 6: ids '${got_ids[*]}'"
fi

# --include-stop-str: the text up to and including the stop string.
stop=${ref:8:5}
want="${ref%%"$stop"*}$stop"
got=$(run --max-tokens 12 --ignore-eos --stop "$stop" --include-stop-str 2>/dev/null)
if [[ $got == "$want" ]]; then pass "--include-stop-str keeps '$stop'"
else fail "--include-stop-str '$stop': got '$got', want '$want'"; fi
got=$(run --max-tokens 12 --ignore-eos --stop "$stop" --include-stop-str-in-output 2>/dev/null)
[[ $got == "$want" ]] && pass "--include-stop-str-in-output" || fail "--include-stop-str-in-output: '$got'"
got=$(run --max-tokens 12 --ignore-eos --stop "$stop" 2>/dev/null)
want=$(printf '%s' "${ref%%"$stop"*}") # as $(...) strips the trailing newlines of got
[[ $got == "$want" ]] && pass "without it the stop string is cut" || fail "default: '$got'"

# --no-skip-special: a control token's text is printed. The bias makes every token
# <|im_end|> (end-of-generation, so --ignore-eos keeps going).
eot=$("$BATON" tokenize --model "$MODEL" --prompt "<|im_end|>" --ids 2>/dev/null)
if [[ ! $eot =~ ^[0-9]+$ ]]; then
    fail "tokenize <|im_end|>: '$eot'"
else
    flags=(--max-tokens 3 --ignore-eos --logit-bias "$eot=100")
    got=$(run "${flags[@]}" 2>/dev/null)
    [[ -z $got ]] && pass "control tokens print nothing by default" || fail "default printed '$got'"
    got=$(run "${flags[@]}" --no-skip-special 2>/dev/null)
    [[ $got == "<|im_end|><|im_end|><|im_end|>" ]] && pass "--no-skip-special prints <|im_end|>" \
        || fail "--no-skip-special printed '$got'"
    got=$(run "${flags[@]}" --no-skip-special-tokens 2>/dev/null)
    [[ $got == "<|im_end|><|im_end|><|im_end|>" ]] && pass "--no-skip-special-tokens" \
        || fail "--no-skip-special-tokens printed '$got'"
fi

# The old and the table names of one parameter are the same flag.
a=$(run --max-tokens 8 --ignore-eos --temperature 0.9 --seed 3 --repeat-penalty 1.3 --logprobs 2 2>&1)
b=$(run --max-tokens 8 --ignore-eos --temperature 0.9 --seed 3 --repetition-penalty 1.3 \
    --top-logprobs 2 2>&1)
a=$(grep -v "time to first token\|decode steps\|: ready in " <<<"$a")
b=$(grep -v "time to first token\|decode steps\|: ready in " <<<"$b")
[[ -n $a && $a == "$b" ]] && pass "--repeat-penalty/--logprobs == --repetition-penalty/--top-logprobs" \
    || fail "aliases differ: '$a' vs '$b'"
finish
