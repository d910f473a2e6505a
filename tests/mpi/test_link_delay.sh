#!/usr/bin/env bash
# test_link_delay.sh - what this build's baton does with BT_LINK_DELAY_US (proto/transport.h):
#   - `baton --version` says whether the link delay is built in;
#   - a build without it (the shipped one, BT_LINK_DELAY=OFF) refuses BT_LINK_DELAY_US=20000
#     under mpirun with a message naming the variable and the cmake option, and runs with
#     BT_LINK_DELAY_US=0;
#   - a build with it (-DBT_LINK_DELAY=ON): greedy generation on 2 stages (3 ranks) gives the
#     same ids with BT_LINK_DELAY_US=20000 as without, and takes at least 3 hops x 20 ms per
#     token longer than 1 token's worth (one sequence: every token crosses
#     coordinator -> stage 1 -> stage 2 -> coordinator);
#   - any build refuses BT_LINK_DELAY_US=abc naming the variable and the value.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pick_model tiny
n_tok=12
common=(--model "$MODEL" --threads 1 --act-codec f32 --ignore-eos --temperature 0 --print-ids
    --max-tokens "$n_tok" --prompt "Hello")

"$BATON" --version >"$WORK/version" 2>&1
delay_line=$(grep '^link delay:' "$WORK/version")
case $delay_line in
"link delay: built in"*) built=1 ;;
"link delay: not built in") built=0 ;;
*) fail "baton --version: no 'link delay:' line: $(cat "$WORK/version")"; finish; exit ;;
esac
pass "baton --version: $delay_line"

# gen NAME DELAY: 3 ranks, the delay in their environment; the exit status, seconds in NAME.secs.
gen() {
    local t0 t1 rc
    t0=$(date +%s.%N)
    BT_LINK_DELAY_US=$2 mpi_run 3 "$BATON" generate "${common[@]}" >"$WORK/$1.out" 2>"$WORK/$1.err"
    rc=$?
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }' >"$WORK/$1.secs"
    return $rc
}

if [[ $built -eq 0 ]]; then
    if gen refused 20000; then
        fail "a build without the link delay ran with BT_LINK_DELAY_US=20000"
    elif grep -q "BT_LINK_DELAY_US=20000 is set, but this baton was built without the link delay (a test build: cmake -DBT_LINK_DELAY=ON)" "$WORK/refused.err"; then
        pass "BT_LINK_DELAY_US=20000 refused: $(grep -m1 -o 'transport: BT_LINK_DELAY_US.*' "$WORK/refused.err")"
    else
        fail "BT_LINK_DELAY_US=20000: no clear refusal in: $(tail -3 "$WORK/refused.err")"
    fi
    if gen zero 0 && [[ $(sed -n 's/^output ids: //p' "$WORK/zero.err" | wc -w) -eq $n_tok ]]; then
        pass "BT_LINK_DELAY_US=0 runs ($(cat "$WORK/zero.secs") s)"
    else
        fail "BT_LINK_DELAY_US=0: $(tail -3 "$WORK/zero.err")"
    fi
else
    if gen plain "" && gen delayed 20000; then
        ids_of "$WORK/plain.err" >"$WORK/plain.ids"
        ids_of "$WORK/delayed.err" >"$WORK/delayed.ids"
        if [[ -s $WORK/plain.ids ]] && cmp -s "$WORK/plain.ids" "$WORK/delayed.ids"; then
            pass "20 ms link delay: the same ids and logprobs as without"
        else
            fail "20 ms link delay changed the output"
        fi
        # Each token after the first waits 3 one-way delays at least.
        if awk -v a="$(cat "$WORK/plain.secs")" -v b="$(cat "$WORK/delayed.secs")" -v n="$n_tok" \
            'BEGIN { exit !(b - a >= (n - 1) * 3 * 0.020) }'; then
            pass "20 ms link delay: $(cat "$WORK/delayed.secs") s against $(cat "$WORK/plain.secs") s for $n_tok tokens (>= $((n_tok - 1)) x 60 ms more)"
        else
            fail "20 ms link delay: $(cat "$WORK/delayed.secs") s against $(cat "$WORK/plain.secs") s, want >= $((n_tok - 1)) x 60 ms more"
        fi
    else
        fail "generate with/without the delay: $(tail -3 "$WORK/plain.err" "$WORK/delayed.err")"
    fi
fi

if gen bad abc; then
    fail "BT_LINK_DELAY_US=abc was accepted"
elif grep -q "BT_LINK_DELAY_US='abc' is not a delay in microseconds" "$WORK/bad.err"; then
    pass "BT_LINK_DELAY_US=abc refused, naming the variable and value"
else
    fail "BT_LINK_DELAY_US=abc: no clear refusal in: $(tail -3 "$WORK/bad.err")"
fi
finish
