#!/usr/bin/env bash
# test_three_hosts.sh - baton across 3 hosts of the one-machine test bed (deploy/netns/):
# the coordinator on bt-h0 and 2 stages on bt-h1 and bt-h2, each a network namespace of its
# own, Open MPI over TCP only, links shaped with tc. Checks:
#   - greedy `baton generate` (2 prompts, 24 tokens, f32 activations) at 1 Gbit/s gives the
#     singleton's ids and logprobs; one prompt again at 10 Mbit/s, also equal;
#   - the profiles limit the rate: 1.5 MB sent from host 1 to host 2 over TCP arrive at
#     6 to 11 Mbit/s with `shape 10mbit`, 40 MB at most 1.1 Gbit/s with `shape 1gbit`;
#   - rank r ran in namespace bt-h<r> with hostname bt-h<r>, in that host's cgroups (memory
#     and CPU limits set by `up`), with btl tcp,self and pml ob1 in its environment (noted by
#     a wrapper that then execs baton, so the note is the rank process's own);
#   - the stages' activations crossed the veths: bytes on bt-v2 grew by more than the
#     activations stage 1 sends stage 2;
#   - `limit 2 --cpus 0.2 --mem 64M`: a spinning shell in host 2 is throttled, 256 MiB do
#     not fit there (16 MiB do);
#   - slices shipped to stages (issue 11): with the model's directory hidden on hosts 1 and 2
#     (`limit I --hide MODEL`) and a slice cache of each host's own inside it, run 1 ships both
#     stages their slices, run 2 loads both from the caches (nothing shipped), and after one
#     byte of host 2's cached slice is flipped (through `testbed.sh exec 2`) run 3 names the
#     entry and chunk, has it shipped again, and host 1 still loads from its cache; every run
#     gives the singleton's ids and logprobs;
#   - `testbed.sh limit 1 --hide MODEL`: host 1 no longer sees the model, host 0 does, and
#     host 1's stand-in directory is its own;
#   - `up` again (4 hosts, then 3, then 3) leaves 3 hosts on the bridge;
#   - after the job no process is left in any host; after `down` (twice; also run by the EXIT trap)
#     no namespace, veth, bridge, cgroup or state directory is left.
# Needs root and working `ip netns` (else exit 77), and the SmolLM2 model (else exit 77).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
TB=$root/deploy/netns/testbed.sh
RUN=$root/deploy/netns/run.sh
: "${BATON:?BATON must point to the baton binary}"

source "$here/lib.sh"
MODEL="${BATON_MODEL:-${BATON_CACHE:-$HOME/.cache/baton}/SmolLM2-135M-Instruct.Q4_1.gguf}"
if [[ ! -r $MODEL ]]; then
    echo "SKIP: model '$MODEL' not found (run deploy/fetch-model.sh)"
    exit 77
fi
# A test bed that is up belongs to someone: never take it over or tear it down.
if ip netns list | grep -q '^bt-h[0-9]' || ip link show bt-br0 >/dev/null 2>&1; then
    echo "FAIL: a test bed is already up ($TB status; a leftover: $TB down); not touching it"
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bt_netns_test.XXXXXX")
cleanup() {
    "$TB" down >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT
# The job runs $WORK/baton, which notes where it runs (rank, network namespace, hostname,
# cgroups, Open MPI's transports) and then becomes baton: the same process, so the note is
# baton's own. The job's programs thus also carry $WORK on their command line.
cat >"$WORK/baton" <<WRAPPER
#!/usr/bin/env bash
echo "rank=\$OMPI_COMM_WORLD_RANK ns=\$(ip netns identify \$\$) host=\$(hostname)" \\
    "cg=\$(grep -o 'bt-testbed/bt-h[0-9]*' /proc/self/cgroup | sort -u | paste -sd,)" \\
    "btl=\$OMPI_MCA_btl pml=\$OMPI_MCA_pml" >>"$WORK/ranks"
exec "$BATON" "\$@"
WRAPPER
chmod +x "$WORK/baton"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if ! "$TB" up 3 --mem 768M --cpus 1.5 >"$WORK/up.log" 2>&1; then
    cat "$WORK/up.log"
    echo "FAIL: testbed.sh up 3"
    exit 1
fi
pass "up 3: $(tail -1 "$WORK/up.log")"
# Idempotent: up again, also after a host too many, gives the same 3 hosts on the bridge.
"$TB" up 4 >/dev/null 2>&1 && "$TB" up 3 --mem 768M --cpus 1.5 >/dev/null 2>&1 &&
    "$TB" up 3 --mem 768M --cpus 1.5 >/dev/null 2>&1
got="$(ip netns list | grep -c '^bt-h') namespaces, $(find /sys/class/net/bt-br0/brif -mindepth 1 | wc -l) bridge ports"
if [[ $got == "3 namespaces, 3 bridge ports" ]]; then
    pass "up 4, up 3, up 3 again: $got"
else
    fail "up 4, up 3, up 3 again: $got, want 3 and 3"
fi

veth_bytes() { # rx + tx bytes of the bridge's end of host $1's link
    echo $(($(cat "/sys/class/net/bt-v$1/statistics/rx_bytes") + \
        $(cat "/sys/class/net/bt-v$1/statistics/tx_bytes")))
}

n_tok=24
common=(--model "$MODEL" --threads 1 --act-codec f32 --ignore-eos --temperature 0 --print-ids
    --max-tokens "$n_tok")
prompts=("The quick brown fox" "In the beginning God created")

# run_case NAME PROFILE PROMPT [FLAGS...]: the singleton, then 3 hosts (with FLAGS); compares
# ids and logprobs.
run_case() {
    local name=$1 profile=$2 prompt=$3
    shift 3
    timeout 120 "$BATON" generate "${common[@]}" --prompt "$prompt" \
        >"$WORK/$name.s.out" 2>"$WORK/$name.s.err"
    local rc1=$?
    "$TB" shape "$profile" >/dev/null || { fail "$name: shape $profile"; return; }
    local b1 b2 t0 t1
    b1=$(veth_bytes 1)
    b2=$(veth_bytes 2)
    : >"$WORK/ranks"
    t0=$(date +%s.%N)
    timeout --kill-after=10 180 "$RUN" --hosts 3 --baton "$WORK/baton" -- generate "${common[@]}" \
        --prompt "$prompt" "$@" >"$WORK/$name.m.out" 2>"$WORK/$name.m.err"
    local rc2=$?
    t1=$(date +%s.%N)
    mv "$WORK/ranks" "$WORK/$name.ranks"
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    echo "$secs" >"$WORK/$name.secs"
    if [[ $rc1 -ne 0 || $rc2 -ne 0 ]]; then
        fail "$name: exit $rc1 (singleton) / $rc2 (3 hosts, $profile)"
        tail -5 "$WORK/$name.s.err" "$WORK/$name.m.err"
        return
    fi
    grep -E '^output (ids|logprobs):' "$WORK/$name.s.err" >"$WORK/$name.s.ids"
    grep -E '^output (ids|logprobs):' "$WORK/$name.m.err" >"$WORK/$name.m.ids"
    local n_out
    n_out=$(sed -n 's/^output ids: //p' "$WORK/$name.s.ids" | wc -w)
    if [[ $n_out -ne $n_tok ]]; then
        fail "$name: the singleton printed $n_out ids, want $n_tok"
    elif cmp -s "$WORK/$name.s.ids" "$WORK/$name.m.ids"; then
        pass "$name: 3 hosts at $profile (${secs} s) = singleton, ids and logprobs"
    else
        fail "$name: 3 hosts at $profile differ from the singleton"
        diff "$WORK/$name.s.ids" "$WORK/$name.m.ids" | head -6
    fi
    # Where each rank ran: one note each.
    local r want got
    for r in 0 1 2; do
        want="rank=$r ns=bt-h$r host=bt-h$r cg=bt-testbed/bt-h$r btl=tcp,self pml=ob1"
        got=$(grep "^rank=$r " "$WORK/$name.ranks")
        if [[ $got == "$want" ]]; then
            pass "$name: $want"
        else
            fail "$name: rank $r seen as '${got//$'\n'/ | }', want '$want'"
        fi
    done
    # Stage 1 sends stage 2 one f32 activation (576 floats) per position, prompt and tokens:
    # they leave host 1 by bt-v1 and enter host 2 by bt-v2.
    local g1=$(($(veth_bytes 1) - b1)) g2=$(($(veth_bytes 2) - b2)) min=$((n_tok * 576 * 4))
    if [[ $g1 -gt $min && $g2 -gt $min ]]; then
        pass "$name: bt-v1 carried $g1 bytes, bt-v2 $g2 (> $min, the activations of $n_tok tokens)"
    else
        fail "$name: bt-v1 carried $g1 bytes, bt-v2 $g2, want > $min each (the traffic took another path)"
    fi
    # Nothing of the job is left in any host.
    local left=""
    for r in 0 1 2; do
        left+=$(ip netns pids "bt-h$r")
    done
    if [[ -z $left ]]; then
        pass "$name: no process left in the hosts"
    else
        fail "$name: processes left in the hosts: $(echo "$left" | xargs -r ps -o pid=,comm= -p)"
    fi
}

# rate PROFILE BYTES: Mbit/s of BYTES over TCP from host 1 to host 2, timed by the receiver
# from the connection to the end of the stream.
rate() {
    "$TB" shape "$1" >/dev/null || return 1
    "$TB" exec 2 python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.0.12", 17000)); s.listen(1); s.settimeout(30)
c, _ = s.accept(); t0 = time.monotonic(); n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    n += len(b)
print("%.2f %d" % (n * 8 / (time.monotonic() - t0) / 1e6, n))' >"$WORK/rate.$1" &
    local rx=$!
    "$TB" exec 1 python3 -c '
import socket, sys, time
for _ in range(100):
    try:
        c = socket.create_connection(("198.18.0.12", 17000)); break
    except OSError: time.sleep(0.05)
c.sendall(bytes(int(sys.argv[1]))); c.close()' "$2"
    wait "$rx"
    cat "$WORK/rate.$1"
}
r10=$(rate 10mbit 1500000)
r1g=$(rate 1gbit 40000000)
if awk -v a="${r10% *}" -v b="${r1g% *}" -v n1="${r10#* }" -v n2="${r1g#* }" \
    'BEGIN { exit !(n1 == 1500000 && n2 == 40000000 && a >= 6 && a <= 11 && b > 0 && b <= 1100) }'; then
    pass "shape: 10mbit carried ${r10% *} Mbit/s, 1gbit ${r1g% *} Mbit/s over TCP between hosts"
else
    fail "shape: 10mbit gave '$r10', 1gbit '$r1g' (Mbit/s bytes); want 6-11 and at most 1100"
fi

run_case fox 1gbit "${prompts[0]}"
run_case genesis 1gbit "${prompts[1]}"
run_case fox10 10mbit "${prompts[0]}"
if [[ -f $WORK/fox10.secs && -f $WORK/fox.secs ]]; then
    echo "     (1gbit $(cat "$WORK/fox.secs") s, 10mbit $(cat "$WORK/fox10.secs") s for the same job)"
fi

# Slices shipped to the stages: hosts 1 and 2 have no model file; each keeps its slice cache in
# its own stand-in for the model's directory.
SC=$(dirname "$MODEL")/bt-slices
"$TB" limit 1 --hide "$MODEL" >/dev/null && "$TB" limit 2 --hide "$MODEL" >/dev/null
if ! "$TB" exec 1 test -e "$MODEL" && ! "$TB" exec 2 test -e "$MODEL" && "$TB" exec 0 test -r "$MODEL"; then
    pass "slices: hosts 1 and 2 have no model file, host 0 has it"
else
    fail "slices: the model is visible on host 1 or 2 (or not on host 0)"
fi
# ready_says NAME RANK WORDS: the start-up line of job NAME says WORDS for stage rank RANK.
ready_says() {
    local got
    got=$(grep '^baton generate: ready in' "$WORK/$1.m.err" | tr ';' '\n' | grep "stage rank $2 ")
    if [[ $got == *"$3"* ]]; then
        pass "$1: stage rank $2 on bt-h$2: $3"
    else
        fail "$1: stage rank $2: '$got', want '$3'"
    fi
}
cache_of() { # host I: the files of its slice cache, as "N slices, M manifests"
    "$TB" exec "$1" bash -c 'echo "$(find "$1" -name "*.gguf" | wc -l) slices, $(find "$1" -name "*.manifest" | wc -l) manifests"' _ "$SC"
}
run_case slices1 1gbit "${prompts[0]}" --slice-cache "$SC"
ready_says slices1 1 "shipped"
ready_says slices1 2 "shipped"
for h in 1 2; do
    got=$(cache_of "$h")
    [[ $got == "1 slices, 1 manifests" ]] && pass "slices1: host $h's cache holds $got" ||
        fail "slices1: host $h's cache holds '$got', want 1 slice, 1 manifest"
done
[[ ! -e $SC ]] && pass "slices1: host 0 (the coordinator's) has no slice cache" ||
    fail "slices1: $SC exists on host 0"
run_case slices2 1gbit "${prompts[0]}" --slice-cache "$SC"
ready_says slices2 1 "weights from the slice cache"
ready_says slices2 2 "weights from the slice cache"
if ! grep -q "shipped" "$WORK/slices2.m.err"; then
    pass "slices2: nothing shipped"
else
    fail "slices2: $(grep shipped "$WORK/slices2.m.err")"
fi
# One byte of host 2's cached slice flipped, as that host.
"$TB" exec 2 bash -c 'f=$(find "$1" -name "*-last.gguf") &&
    printf "\x5a" | dd of="$f" bs=1 seek=$(($(stat -c %s "$f") / 2)) conv=notrunc status=none' _ "$SC"
run_case slices3 1gbit "${prompts[0]}" --slice-cache "$SC"
ready_says slices3 1 "weights from the slice cache"
ready_says slices3 2 "shipped"
if grep -qE "stage rank 2: slice cache entry [0-9a-f]+-L[0-9]+-[0-9]+-last\.gguf: chunk [0-9]+ \(bytes [0-9.]+\) has hash" \
    "$WORK/slices3.m.err"; then
    pass "slices3: the corrupt entry and its chunk are named, and it was fetched again"
else
    fail "slices3: no line naming host 2's corrupt entry"
    grep -i slice "$WORK/slices3.m.err" | head -3
fi

# The cgroup limits are the ones `up` set.
mem=$(cat /sys/fs/cgroup/memory/bt-testbed/bt-h2/memory.limit_in_bytes 2>/dev/null ||
    cat /sys/fs/cgroup/bt-testbed/bt-h2/memory.max 2>/dev/null)
quota=$(cat /sys/fs/cgroup/cpu/bt-testbed/bt-h2/cpu.cfs_quota_us 2>/dev/null ||
    cut -d' ' -f1 /sys/fs/cgroup/bt-testbed/bt-h2/cpu.max 2>/dev/null)
if [[ $mem == $((768 * 1048576)) && $quota == 150000 ]]; then
    pass "host 2's cgroups: memory limit 768 MiB, CPU quota 150 ms per 100 ms"
else
    fail "host 2's cgroups: memory limit '$mem', CPU quota '$quota' (want $((768 * 1048576)), 150000)"
fi

# The limits bite: host 2 capped at 0.2 cores is throttled while it spins for 1 s; capped at
# 64 MiB it may touch 16 MiB but not 256 MiB.
"$TB" limit 2 --cpus 0.2 --mem 64M >/dev/null
"$TB" exec 2 timeout 1 sh -c 'while :; do :; done'
throttled=$(awk '$1 == "nr_throttled" { print $2 }' /sys/fs/cgroup/cpu/bt-testbed/bt-h2/cpu.stat \
    /sys/fs/cgroup/bt-testbed/bt-h2/cpu.stat 2>/dev/null | head -1)
"$TB" exec 2 python3 -c 'b = bytearray(16 << 20)'
small=$?
"$TB" exec 2 python3 -c 'b = bytearray(256 << 20)' 2>/dev/null
big=$?
if [[ ${throttled:-0} -gt 0 && $small -eq 0 && $big -ne 0 ]]; then
    pass "limit 2 --cpus 0.2 --mem 64M: throttled $throttled times in 1 s; 16 MiB fit, 256 MiB ended with exit $big"
else
    fail "limit 2 --cpus 0.2 --mem 64M: throttled '${throttled:-}' times, exits $small (16 MiB) and $big (256 MiB)"
fi

# Hiding the model from host 1.
if "$TB" limit 1 --hide "$MODEL" >"$WORK/hide.log" 2>&1 &&
    ! "$TB" exec 1 test -e "$MODEL" && "$TB" exec 0 test -r "$MODEL" &&
    "$TB" exec 1 touch "$(dirname "$MODEL")/bt-netns-probe-$$" &&
    "$TB" exec 1 test -e "$(dirname "$MODEL")/bt-netns-probe-$$" &&
    ! test -e "$(dirname "$MODEL")/bt-netns-probe-$$"; then
    pass "limit 1 --hide: host 1 sees no model and a directory of its own, host 0 the model"
else
    fail "limit 1 --hide: $(cat "$WORK/hide.log")"
    rm -f "$(dirname "$MODEL")/bt-netns-probe-$$"
fi

# down leaves nothing behind.
if ! "$TB" down >"$WORK/down.log" 2>&1 || ! "$TB" down >>"$WORK/down.log" 2>&1; then
    fail "down (twice): $(cat "$WORK/down.log")"
fi
left=$(
    ip netns list | grep '^bt-h'
    ip -o link show | grep -E ': (bt-br0|bt-v[0-9]+)[@:]'
    ls -d /sys/fs/cgroup/memory/bt-testbed /sys/fs/cgroup/cpu/bt-testbed \
        /sys/fs/cgroup/bt-testbed /run/bt-testbed 2>/dev/null
    pgrep -af -- "$WORK/baton"
    pgrep -af -- "bt-netns-hosts"
)
if [[ -z $left ]]; then
    pass "down: no namespace, link, cgroup, state or process left"
else
    fail "down left: $left"
fi

echo "$n_pass passed, $n_fail failed"
[[ $n_fail -eq 0 ]]
