#!/usr/bin/env bash
# test_link_delay.sh - link profiles with an added delay on the test bed (deploy/netns/), and
# the multi-host default codec. 3 hosts (coordinator on bt-h0, stages on bt-h1 and bt-h2),
# the tiny 6-layer model of the build. Checks:
#   - `shape 1gbit+20ms` shapes the rate with tc (tbf 1Gbit on the links) and gives every
#     process started as a host BT_LINK_DELAY_US=20000; `shape 1gbit` takes the delay away;
#     a malformed delay (1gbit+fast) is refused naming it;
#   - run.sh refuses a delay profile for a baton built without the delay ($BATON), before
#     mpirun, with a message naming the profile and the cmake option;
#   - with the test build ($BATON_LINKDELAY): greedy generation across the hosts gives the
#     same ids at 1gbit+20ms as at 1gbit and takes at least 3 one-way delays per token more
#     (every token crosses coordinator -> stage 1 -> stage 2 -> coordinator);
#   - multi-host default codec: across the hosts without --act-codec the stages get f16 (bench's
#     JSON "codec", and generate's stderr line naming the stage on another host); with
#     --act-codec f32 they get f32 and no line; plain mpirun on one host gives f32.
# Needs root, `ip netns` and tc (else exit 77).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
TB=$root/deploy/netns/testbed.sh
RUN=$root/deploy/netns/run.sh
: "${BATON:?BATON must point to the baton binary}"
: "${BATON_LINKDELAY:?BATON_LINKDELAY must point to baton built with the link delay}"
: "${BT_TINY_MODEL:?BT_TINY_MODEL must point to the tiny model}"

source "$here/lib.sh"
[[ -r $BT_TINY_MODEL ]] || { echo "FAIL: tiny model '$BT_TINY_MODEL' missing (build it)"; exit 1; }
if ip netns list | grep -q '^bt-h[0-9]' || ip link show bt-br0 >/dev/null 2>&1; then
    echo "FAIL: a test bed is already up ($TB status; a leftover: $TB down); not touching it"
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bt_netns_delay.XXXXXX")
cleanup() {
    "$TB" down >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if ! "$TB" up 3 >"$WORK/up.log" 2>&1; then
    cat "$WORK/up.log"
    echo "FAIL: testbed.sh up 3"
    exit 1
fi

# The profile: rate by tc, delay in the hosts' environment.
"$TB" shape 1gbit+20ms >"$WORK/shape.log" 2>&1
qdisc=$(tc qdisc show dev bt-v1 root)
env1=$("$TB" exec 1 sh -c 'echo "${BT_LINK_DELAY_US:-unset}"')
if [[ $qdisc == *"tbf"*"rate 1Gbit"* && $env1 == 20000 ]]; then
    pass "shape 1gbit+20ms: tc '$qdisc'; host 1 sees BT_LINK_DELAY_US=$env1 ($(cat "$WORK/shape.log"))"
else
    fail "shape 1gbit+20ms: tc '$qdisc', host 1 BT_LINK_DELAY_US '$env1'"
fi
"$TB" shape 1gbit >/dev/null 2>&1
env1=$("$TB" exec 1 sh -c 'echo "${BT_LINK_DELAY_US:-unset}"')
[[ $env1 == unset ]] && pass "shape 1gbit: no delay left" || fail "shape 1gbit: host 1 still has BT_LINK_DELAY_US=$env1"
if out=$("$TB" shape 1gbit+fast 2>&1); then
    fail "shape 1gbit+fast accepted"
elif [[ $out == *"delay 'fast' is not a time"* ]]; then
    pass "shape 1gbit+fast refused: $out"
else
    fail "shape 1gbit+fast: unclear refusal '$out'"
fi

n_tok=8
gen=(generate --model "$BT_TINY_MODEL" --threads 1 --ignore-eos --temperature 0 --print-ids
    --max-tokens "$n_tok" --prompt "Hello")

# run_gen NAME BATON PROFILE [FLAGS...]: across the 3 hosts; exit status; seconds in NAME.secs.
run_gen() {
    local name=$1 baton=$2 profile=$3 t0 t1 rc
    shift 3
    t0=$(date +%s.%N)
    timeout --kill-after=10 120 "$RUN" --hosts 3 --profile "$profile" --baton "$baton" -- \
        "${gen[@]}" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
    rc=$?
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }' >"$WORK/$name.secs"
    return $rc
}

# The shipped build: refused by run.sh.
run_gen refused "$BATON" 1gbit+20ms
rc=$?
if [[ $rc -eq 2 ]] && grep -q "adds a link delay of 20000 us, which only a test build of baton applies (cmake -DBT_LINK_DELAY=ON)" "$WORK/refused.err" &&
    ! grep -q "output ids" "$WORK/refused.err"; then
    pass "run.sh refuses 1gbit+20ms for $(basename "$BATON"): $(grep -m1 '^run.sh:' "$WORK/refused.err")"
else
    fail "run.sh with 1gbit+20ms and $BATON: exit $rc, $(tail -2 "$WORK/refused.err")"
fi

# The test build: the delay is applied, the tokens do not change.
if run_gen plain "$BATON_LINKDELAY" 1gbit && run_gen delayed "$BATON_LINKDELAY" 1gbit+20ms; then
    grep -E '^output (ids|logprobs):' "$WORK/plain.err" >"$WORK/plain.ids"
    grep -E '^output (ids|logprobs):' "$WORK/delayed.err" >"$WORK/delayed.ids"
    if [[ -s $WORK/plain.ids ]] && cmp -s "$WORK/plain.ids" "$WORK/delayed.ids"; then
        pass "1gbit+20ms: the same ids and logprobs as 1gbit"
    else
        fail "1gbit+20ms changed the output"
    fi
    p=$(cat "$WORK/plain.secs")
    d=$(cat "$WORK/delayed.secs")
    if awk -v a="$p" -v b="$d" -v n="$n_tok" 'BEGIN { exit !(b - a >= (n - 1) * 3 * 0.020) }'; then
        pass "1gbit+20ms: $d s against $p s at 1gbit for $n_tok tokens (>= $((n_tok - 1)) x 3 x 20 ms more)"
    else
        fail "1gbit+20ms: $d s against $p s at 1gbit, want >= $((n_tok - 1)) x 3 x 20 ms more"
    fi
    # No --act-codec across hosts: f16, said on stderr naming the stage on another host.
    if grep -q "activations f16: the multi-host default, stage rank 1 (layers 0-2 on bt-h1) is on another host than this coordinator" "$WORK/plain.err"; then
        pass "multi-host default: $(grep -m1 'multi-host default' "$WORK/plain.err")"
    else
        fail "multi-host default: no line naming f16 and stage rank 1 on bt-h1 in: $(tail -3 "$WORK/plain.err")"
    fi
else
    fail "generate across the hosts with the test build: $(tail -3 "$WORK/plain.err" "$WORK/delayed.err" 2>/dev/null)"
fi

# The codec the stages got, from bench's JSON: default and explicit across hosts, one host.
bench=(bench --model "$BT_TINY_MODEL" --threads 1 --pp 0 --tg 4 --reps 1)
codec_of() { tail -1 "$1" | sed -n 's/.*"codec":"\([a-z0-9]*\)".*"remote_stages":\([a-z]*\).*/\1 \2/p'; }
timeout --kill-after=10 120 "$RUN" --hosts 3 --profile 1gbit --baton "$BATON" -- "${bench[@]}" \
    >"$WORK/b_auto.out" 2>"$WORK/b_auto.err"
timeout --kill-after=10 120 "$RUN" --hosts 3 --profile 1gbit --baton "$BATON" -- "${bench[@]}" \
    --act-codec f32 >"$WORK/b_f32.out" 2>"$WORK/b_f32.err"
OMPI_MCA_btl_vader_single_copy_mechanism=none timeout --kill-after=10 120 \
    "$root/deploy/mpirun-guard" mpirun --allow-run-as-root \
    --oversubscribe -np 3 --bind-to none "$BATON" "${bench[@]}" \
    >"$WORK/b_local.out" 2>"$WORK/b_local.err"
got="$(codec_of "$WORK/b_auto.out") | $(codec_of "$WORK/b_f32.out") | $(codec_of "$WORK/b_local.out")"
if [[ $got == "f16 true | f32 true | f32 false" ]] && ! grep -q "multi-host default" "$WORK/b_f32.err" "$WORK/b_local.err"; then
    pass "codec across hosts by default, with --act-codec f32, on one host: $got"
else
    fail "codec across hosts by default, with --act-codec f32, on one host: '$got', want 'f16 true | f32 true | f32 false'"
    tail -n 2 "$WORK/b_auto.err" "$WORK/b_f32.err" "$WORK/b_local.err"
fi

"$TB" down >/dev/null 2>&1
left=$(ip netns list | grep '^bt-h'; ls -d /run/bt-testbed 2>/dev/null)
[[ -z $left ]] && pass "down: nothing left" || fail "down left: $left"
echo "$n_pass passed, $n_fail failed"
[[ $n_fail -eq 0 ]]
