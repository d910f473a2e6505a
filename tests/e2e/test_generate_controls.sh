#!/usr/bin/env bash
# Generation controls from the command line: stop strings are never printed, bad flags exit 2
# naming the flag, --n 2 prints two labelled completions, --beam-width 1 prints what
# --temperature 0 prints, and a fixed --seed is reproducible.
source "$(dirname "$0")/lib.sh"

# Flag errors come before the model is opened: no model needed.
expect 2 "--n: 0 is outside" -- generate --prompt hi --n 0
expect 2 "--n: 17 is outside" -- generate --prompt hi --n 17
expect 2 "--best-of must be at least --n" -- generate --prompt hi --n 3 --best-of 2
expect 2 "--beam-width: 9 is outside" -- generate --prompt hi --beam-width 9
expect 2 "--beam-width needs --temperature 0" -- generate --prompt hi --beam-width 2 --temperature 0.7
expect 2 "--n must not exceed --beam-width" -- generate --prompt hi --beam-width 2 --n 3
expect 2 "--logprobs: 21 is outside" -- generate --prompt hi --logprobs 21
expect 2 "--top-k: -1 is outside" -- generate --prompt hi --top-k -1
expect 2 "--typical-p: 0 is outside" -- generate --prompt hi --typical-p 0
expect 2 "--repeat-penalty: 11 is outside" -- generate --prompt hi --repeat-penalty 11
expect 2 "--presence-penalty: 3 is outside" -- generate --prompt hi --presence-penalty 3
expect 2 "--frequency-penalty: -2.5 is outside" -- generate --prompt hi --frequency-penalty -2.5
expect 2 "--min-tokens: 'x' is not an integer" -- generate --prompt hi --min-tokens x
expect 2 "--length-penalty: 'x' is not a number" -- generate --prompt hi --length-penalty x
expect 2 "--early-stopping needs --beam-width" -- generate --prompt hi --early-stopping
expect 2 "--logit-bias: 'abc' is not ID=BIAS" -- generate --prompt hi --logit-bias abc
expect 2 "--logit-bias: bias 500 for token 3 is outside" -- generate --prompt hi --logit-bias 3=500
expect 2 "--stop needs a value" -- generate --prompt hi --stop
expect 2 "--stop: string 0 is 300 bytes" -- generate --prompt hi --stop "$(printf 'a%.0s' {1..300})"
expect 2 "--stop: string 0 is empty" -- generate --prompt hi --stop ""
stops=()
for i in $(seq 17); do stops+=(--stop "s$i"); done
expect 2 "--stop: more than 16 strings" -- generate --prompt hi "${stops[@]}"
expect 2 "--stop cannot be combined with --beam-width" -- generate --prompt hi --beam-width 2 --stop x

need_model
gen() { "$BATON" generate --model "$MODEL" "$@" 2>/dev/null; }
P="The capital of France is"

# --beam-width 1 equals greedy (fixed length: EOS ignored).
greedy=$(gen --prompt "$P" --temperature 0 --max-tokens 24 --ignore-eos)
beam1=$(gen --prompt "$P" --beam-width 1 --max-tokens 24 --ignore-eos)
if [[ -n $greedy && $greedy == "$beam1" ]]; then pass "--beam-width 1 == --temperature 0"
else fail "--beam-width 1 '$beam1' != --temperature 0 '$greedy'"; fi

# A stop string from the middle of the greedy text (across token boundaries): the output is
# the text before it, and the stop string is never printed.
stop=${greedy:8:5}
want=$(printf '%s' "${greedy%%"$stop"*}") # as $(...) strips the trailing newlines of got
got=$(gen --prompt "$P" --temperature 0 --max-tokens 24 --ignore-eos --stop "zzzq" --stop "$stop")
if [[ $got == "$want" && $got != *"$stop"* ]]; then pass "--stop '$stop' cut the text"
else fail "--stop '$stop': got '$got', want '$want'"; fi
err=$("$BATON" generate --model "$MODEL" --prompt "$P" --temperature 0 --max-tokens 24 \
      --stop "$stop" 2>&1 >/dev/null)
grep -q "finish: stop" <<<"$err" && pass "--stop finish reason" || fail "--stop finish: $err"

# --n 2 prints two labelled completions; the same seed prints the same.
out=$(gen --prompt "Once upon a time" --n 2 --max-tokens 12 --seed 5 --ignore-eos)
[[ $(grep -c '^=== completion [01] ' <<<"$out") -eq 2 ]] && pass "--n 2 prints two completions" \
    || fail "--n 2: $out"
again=$(gen --prompt "Once upon a time" --n 2 --max-tokens 12 --seed 5 --ignore-eos)
[[ $out == "$again" ]] && pass "--n 2 --seed 5 reproducible" || fail "--n 2 --seed 5 differs"
one=$(gen --prompt "Once upon a time" --max-tokens 12 --seed 5 --ignore-eos --temperature 0.9 \
      --top-k 40 --top-p 0.9 --repeat-penalty 1.1 --presence-penalty 0.5 --logit-bias 11=-1)
one2=$(gen --prompt "Once upon a time" --max-tokens 12 --seed 5 --ignore-eos --temperature 0.9 \
       --top-k 40 --top-p 0.9 --repeat-penalty 1.1 --presence-penalty 0.5 --logit-bias 11=-1)
[[ -n $one && $one == "$one2" ]] && pass "full chain --seed reproducible" || fail "full chain differs"

# Beams with n 2: two labelled completions with scores, best first.
out=$(gen --prompt "$P" --beam-width 3 --n 2 --max-tokens 10)
[[ $(grep -c '^=== completion [01] .*score' <<<"$out") -eq 2 ]] && pass "--beam-width 3 --n 2" \
    || fail "--beam-width 3 --n 2: $out"

# --logprobs 3: each token with 3 alternatives on stderr.
err=$("$BATON" generate --model "$MODEL" --prompt "$P" --temperature 0 --max-tokens 4 \
      --logprobs 3 2>&1 >/dev/null)
n_lines=$(grep -cE '^  [0-9]+ .* \| [0-9]+ .* [0-9]+ .* [0-9]+ ' <<<"$err")
[[ $n_lines -ge 1 ]] && pass "--logprobs 3 prints alternatives" || fail "--logprobs 3: $err"
finish
