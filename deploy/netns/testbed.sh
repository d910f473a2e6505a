#!/usr/bin/env bash
# testbed.sh - several hosts on one machine: network namespaces joined by veth pairs to a
# bridge, links shaped with tc, optional cgroup limits and a hidden model per host.
#
#   deploy/netns/testbed.sh up N [--mem SIZE] [--cpus C] [--hide PATH]...
#   deploy/netns/testbed.sh limit I [--mem SIZE] [--cpus C] [--hide PATH]...
#   deploy/netns/testbed.sh shape PROFILE     RATE[+DELAY]: RATE unshaped | 10gbit | 1gbit |
#                                             100mbit | 10mbit, DELAY 0.2ms | 1ms | 20ms (any
#                                             Nms or Nus): 1gbit+1ms, unshaped+0.2ms
#   deploy/netns/testbed.sh status
#   deploy/netns/testbed.sh hostfile [SLOTS]  an Open MPI hostfile of the hosts (SLOTS 1)
#   deploy/netns/testbed.sh exec I CMD...     CMD as host I (namespace, cgroup, hidden paths)
#   deploy/netns/testbed.sh down
#
# Host i is the network namespace bt-h<i> with interface bt0 at 198.18.0.<10+i>/24 (the
# benchmarking range, RFC 2544), whose veth peer bt-v<i> is a port of the bridge bt-br0
# (198.18.0.1/24) in the root namespace, where mpirun runs. The namespaces have no default
# route and nothing is routed or NATed out of the bridge: the traffic never leaves them.
# `up N` makes hosts 0..N-1 and removes any beyond (idempotent); `down` removes everything
# `up`, `limit` and `shape` made (namespaces, bridge, veths, cgroups, /run/bt-testbed) after
# killing what still runs in a host. Needs root and iproute2 (deploy/install-deps.sh).
#
# Limits (on `up` for every host, or `limit I` for one; given again they replace the old):
#   --mem SIZE   memory cgroup limit (512M, 2G, bytes; swap included where the kernel counts it)
#   --cpus C     CPU quota in cores (0.5 = half a core: 50 ms per 100 ms period)
#   --hide PATH  the host sees the directory holding PATH (PATH itself if a directory) as an
#                empty directory of its own, kept until `down` (a per-host slice cache fits
#                there); the model file is thus absent on that host
# Every process started as the host (`exec`, deploy/netns/mpi-agent) joins its cgroups
# (v1: memory and cpu controllers under bt-testbed/; v2 when /sys/fs/cgroup is unified) and,
# with --hide, gets a private mount namespace. Shaping: docs/deployment.md ("Test bed").
# Rates are the kernel's (tc tbf on both ends of each link). This kernel has no netem, so
# the added one-way DELAY is not the kernel's: `shape` records it and every process started
# as a host gets BT_LINK_DELAY_US in its environment, which only a test build of baton
# applies (cmake -DBT_LINK_DELAY=ON: its MPI transport holds each frame that long before it
# sends it; the shipped build refuses the variable). Other programs see no delay.
set -euo pipefail

PREFIX=bt-h
BRIDGE=bt-br0
NET=198.18.0
STATE=/run/bt-testbed
CG_NAME=bt-testbed
CG_ROOT=/sys/fs/cgroup

die() {
    echo "testbed: $*" >&2
    exit 2
}

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, tc, cgroups)"
    command -v ip >/dev/null || die "ip (iproute2) not found: deploy/install-deps.sh"
}

host_addr() { echo "$NET.$((10 + $1))"; }

# The hosts that exist now, by index, ascending.
hosts() {
    ip netns list 2>/dev/null | sed -n "s/^$PREFIX\([0-9]\+\)\b.*/\1/p" | sort -n
}

check_index() {
    [[ $1 =~ ^[0-9]+$ ]] || die "host index must be a number, not '$1'"
    ip netns list | grep -q "^$PREFIX$1\b" || die "host $1 ($PREFIX$1) does not exist (testbed.sh up N)"
}

cg_v2() { [[ -f $CG_ROOT/cgroup.controllers ]]; }

# cg_dirs I: the cgroup directories of host I that exist (one per v1 controller, one in v2).
cg_dirs() {
    local d
    if cg_v2; then
        d=$CG_ROOT/$CG_NAME/$PREFIX$1
        [[ -d $d ]] && echo "$d"
    else
        for d in "$CG_ROOT/memory/$CG_NAME/$PREFIX$1" "$CG_ROOT/cpu/$CG_NAME/$PREFIX$1"; do
            [[ -d $d ]] && echo "$d"
        done
    fi
    return 0
}

to_bytes() {
    local b
    b=$(numfmt --from=iec "${1^^}" 2>/dev/null) || die "--mem '$1' is not a size (512M, 2G, bytes)"
    [[ $b -ge 4194304 ]] || die "--mem '$1' is below 4 MiB"
    echo "$b"
}

# cpu_quota C: microseconds per 100 ms period for C cores.
cpu_quota() {
    [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--cpus '$1' is not a number of cores (0.5, 1, 2)"
    local q
    q=$(awk -v c="$1" 'BEGIN { printf "%d", c * 100000 }')
    [[ $q -ge 1000 ]] || die "--cpus '$1' is below 0.01 cores"
    echo "$q"
}

set_mem() {
    local i=$1 bytes=$2 d
    if cg_v2; then
        d=$CG_ROOT/$CG_NAME/$PREFIX$i
        mkdir -p "$d"
        echo "$bytes" >"$d/memory.max"
        [[ -f $d/memory.swap.max ]] && echo 0 >"$d/memory.swap.max"
    else
        [[ -d $CG_ROOT/memory ]] || die "no memory cgroup controller at $CG_ROOT/memory"
        d=$CG_ROOT/memory/$CG_NAME/$PREFIX$i
        mkdir -p "$d"
        # memsw (memory + swap) must stay >= the memory limit: raise it first when growing.
        if [[ -f $d/memory.memsw.limit_in_bytes ]]; then
            echo -1 >"$d/memory.memsw.limit_in_bytes"
            echo "$bytes" >"$d/memory.limit_in_bytes"
            echo "$bytes" >"$d/memory.memsw.limit_in_bytes"
        else
            echo "$bytes" >"$d/memory.limit_in_bytes"
        fi
    fi
}

set_cpu() {
    local i=$1 quota=$2 d
    if cg_v2; then
        d=$CG_ROOT/$CG_NAME/$PREFIX$i
        mkdir -p "$d"
        echo "$quota 100000" >"$d/cpu.max"
    else
        [[ -d $CG_ROOT/cpu ]] || die "no cpu cgroup controller at $CG_ROOT/cpu"
        d=$CG_ROOT/cpu/$CG_NAME/$PREFIX$i
        mkdir -p "$d"
        echo 100000 >"$d/cpu.cfs_period_us"
        echo "$quota" >"$d/cpu.cfs_quota_us"
    fi
}

cg_prepare_v2() {
    cg_v2 || return 0
    mkdir -p "$CG_ROOT/$CG_NAME"
    # The controllers must be enabled on the way down for memory.max and cpu.max to exist.
    echo "+memory +cpu" >"$CG_ROOT/cgroup.subtree_control" 2>/dev/null || true
    echo "+memory +cpu" >"$CG_ROOT/$CG_NAME/cgroup.subtree_control" ||
        die "cannot enable the memory and cpu controllers in $CG_ROOT/$CG_NAME"
}

# apply_limits I ARGS...: --mem, --cpus, --hide for host I.
apply_limits() {
    local i=$1
    shift
    local mem="" cpus="" hides=()
    while [[ $# -gt 0 ]]; do
        case $1 in
        --mem) [[ $# -ge 2 ]] || die "--mem needs a size"; mem=$(to_bytes "$2"); shift 2 ;;
        --cpus) [[ $# -ge 2 ]] || die "--cpus needs a number"; cpus=$(cpu_quota "$2"); shift 2 ;;
        --hide)
            [[ $# -ge 2 ]] || die "--hide needs a path"
            [[ $2 == /* ]] || die "--hide '$2' must be an absolute path"
            [[ -e $2 ]] || die "--hide '$2' does not exist"
            hides+=("$2")
            shift 2
            ;;
        *) die "unknown limit '$1' (--mem SIZE, --cpus C, --hide PATH)" ;;
        esac
    done
    cg_prepare_v2
    if [[ -n $mem ]]; then set_mem "$i" "$mem"; fi
    if [[ -n $cpus ]]; then set_cpu "$i" "$cpus"; fi
    if [[ ${#hides[@]} -gt 0 ]]; then
        local dir h n=0
        : >"$STATE/$PREFIX$i.hide"
        for h in "${hides[@]}"; do
            if [[ -d $h ]]; then dir=$h; else dir=$(dirname "$h"); fi
            mkdir -p "$STATE/$PREFIX$i.hidden/$n"
            # One line per hidden directory: what covers it, then the directory.
            printf '%s\t%s\n' "$STATE/$PREFIX$i.hidden/$n" "$dir" >>"$STATE/$PREFIX$i.hide"
            n=$((n + 1))
        done
    fi
    return 0
}

make_host() {
    local i=$1 ns=$PREFIX$1 veth=bt-v$1
    if ! ip netns list | grep -q "^$ns\b"; then
        ip netns add "$ns"
    fi
    if ! ip link show "$veth" >/dev/null 2>&1; then
        ip link add "$veth" type veth peer name bt0 netns "$ns"
    fi
    ip link set "$veth" master "$BRIDGE"
    ip link set "$veth" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr replace "$(host_addr "$i")/24" dev bt0
    ip -n "$ns" link set bt0 up
}

# kill_host I: every process still in host I's namespace or cgroups.
kill_host() {
    local i=$1 pids d
    pids=$(ip netns pids "$PREFIX$i" 2>/dev/null || true)
    for d in $(cg_dirs "$i"); do
        pids+=" $(cat "$d/cgroup.procs" 2>/dev/null || true)"
    done
    pids=$(xargs <<<"$pids") # one line, no blanks at the ends
    [[ -z $pids ]] && return 0
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    local t
    for t in 1 2 3 4 5 6 7 8 9 10; do
        sleep 0.2
        # shellcheck disable=SC2086
        kill -0 $pids 2>/dev/null || return 0
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.2
}

remove_host() {
    local i=$1 d
    kill_host "$i"
    ip link del "bt-v$i" 2>/dev/null || true
    ip netns del "$PREFIX$i" 2>/dev/null || true
    for d in $(cg_dirs "$i"); do
        rmdir "$d" 2>/dev/null || echo "testbed: cannot remove cgroup $d (processes left?)" >&2
    done
    rm -rf "$STATE/$PREFIX$i.hide" "$STATE/$PREFIX$i.hidden"
}

cmd_up() {
    [[ $# -ge 1 && $1 =~ ^[0-9]+$ && $1 -ge 1 && $1 -le 200 ]] ||
        die "up needs a number of hosts from 1 to 200, not '${1:-}'"
    local n=$1 i
    shift
    # A route for the test subnet on another interface would send the traffic elsewhere.
    local other
    other=$(ip -4 route show "$NET.0/24" | grep -v "dev $BRIDGE" || true)
    [[ -z $other ]] || die "$NET.0/24 is already routed here ($other): not ours, refusing"
    mkdir -p "$STATE"
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge stp_state 0 forward_delay 0
    fi
    ip addr replace "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for i in $(hosts); do
        if [[ $i -ge $n ]]; then remove_host "$i"; fi
    done
    for ((i = 0; i < n; i++)); do
        make_host "$i"
        if [[ $# -gt 0 ]]; then apply_limits "$i" "$@"; fi
    done
    echo "$n" >"$STATE/hosts"
    # Links come up asynchronously: wait until each host's link is up and its bridge port
    # forwards (state 3; no STP, so at once).
    for ((i = 0; i < n; i++)); do
        local t
        for t in $(seq 50); do
            [[ $(cat "/sys/class/net/bt-v$i/brport/state" 2>/dev/null) == 3 ]] &&
                ip -n "$PREFIX$i" -o link show bt0 | grep -q 'state UP' && break
            [[ $t -eq 50 ]] && die "host $i: link bt0/bt-v$i not up and forwarding after 5 s"
            sleep 0.1
        done
    done
    echo "testbed: $n hosts up: $(for ((i = 0; i < n; i++)); do printf '%s ' "$PREFIX$i=$(host_addr "$i")"; done)"
}

cmd_limit() {
    [[ $# -ge 2 ]] || die "usage: limit I [--mem SIZE] [--cpus C] [--hide PATH]..."
    check_index "$1"
    apply_limits "$@"
}

# Rates of the profiles, and the token bucket (bytes) that lets a GSO packet of 64 KiB
# through at the slow rates; at the fast ones 1 ms of traffic.
profile_args() {
    case $1 in
    10gbit) echo "rate 10gbit burst 1250000" ;;
    1gbit) echo "rate 1gbit burst 131072" ;;
    100mbit) echo "rate 100mbit burst 65536" ;;
    10mbit) echo "rate 10mbit burst 65536" ;;
    unshaped) echo "" ;;
    *) die "unknown profile '$1' (unshaped, 10gbit, 1gbit, 100mbit, 10mbit)" ;;
    esac
}

# delay_us DELAY: microseconds of "0.2ms", "1ms", "20ms", "500us".
delay_us() {
    local us
    us=$(awk -v d="$1" 'BEGIN {
        if (d ~ /^[0-9]+(\.[0-9]+)?ms$/) { sub(/ms$/, "", d); printf "%d", d * 1000 + 0.5 }
        else if (d ~ /^[0-9]+us$/) { sub(/us$/, "", d); printf "%d", d }
        else print "bad" }')
    [[ $us != bad ]] || die "delay '$1' is not a time (0.2ms, 1ms, 20ms, 500us)"
    [[ $us -le 10000000 ]] || die "delay '$1' is over 10 s"
    echo "$us"
}

cmd_shape() {
    [[ $# -eq 1 ]] || die "usage: shape RATE[+DELAY] (RATE unshaped|10gbit|1gbit|100mbit|10mbit, DELAY 0.2ms|1ms|20ms)"
    local args i rate=${1%%+*} delay=0
    if [[ $1 == *+* ]]; then delay=$(delay_us "${1#*+}"); fi
    args=$(profile_args "$rate")
    [[ -n $(hosts) ]] || die "no hosts (testbed.sh up N first)"
    for i in $(hosts); do
        # Both directions: egress of the host's end (host -> bridge) and of the bridge's end
        # (bridge -> host); a queue of up to 50 ms at the rate before tbf drops.
        if [[ -z $args ]]; then
            ip -n "$PREFIX$i" link set bt0 up
            tc -n "$PREFIX$i" qdisc del dev bt0 root 2>/dev/null || true
            tc qdisc del dev "bt-v$i" root 2>/dev/null || true
        else
            # shellcheck disable=SC2086
            tc -n "$PREFIX$i" qdisc replace dev bt0 root tbf $args latency 50ms
            # shellcheck disable=SC2086
            tc qdisc replace dev "bt-v$i" root tbf $args latency 50ms
        fi
    done
    echo "$1" >"$STATE/profile"
    # The delay is the hosts' processes' (cmd_exec); none: no variable at all.
    if [[ $delay -gt 0 ]]; then echo "$delay" >"$STATE/delay_us"; else rm -f "$STATE/delay_us"; fi
    local note="rate by tc"
    [[ $delay -eq 0 ]] || note+="; added delay $delay us: baton's transport, test builds only"
    echo "testbed: profile $1 on $(hosts | wc -l) hosts ($note)"
}

cmd_status() {
    local i d n
    n=$(hosts | wc -l)
    if [[ $n -eq 0 ]] && ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        echo "testbed: down"
        return 0
    fi
    echo "testbed: $n hosts, bridge $BRIDGE $(ip -4 -o addr show dev "$BRIDGE" 2>/dev/null | awk '{print $4}'), profile $(cat "$STATE/profile" 2>/dev/null || echo unshaped)"
    for i in $(hosts); do
        local q limits=""
        q=$(tc -n "$PREFIX$i" qdisc show dev bt0 root 2>/dev/null | head -1)
        for d in $(cg_dirs "$i"); do
            [[ -f $d/memory.limit_in_bytes ]] && limits+=" mem=$(numfmt --to=iec <"$d/memory.limit_in_bytes")"
            [[ -f $d/memory.max ]] && limits+=" mem=$(cat "$d/memory.max")"
            [[ -f $d/cpu.cfs_quota_us ]] && limits+=" cpu_quota_us=$(cat "$d/cpu.cfs_quota_us")"
            [[ -f $d/cpu.max ]] && limits+=" cpu.max=$(tr ' ' / <"$d/cpu.max")"
        done
        [[ -f $STATE/$PREFIX$i.hide ]] && limits+=" hides=$(cut -f2 "$STATE/$PREFIX$i.hide" | paste -sd,)"
        printf '%s %s rx=%s tx=%s qdisc=[%s]%s\n' "$PREFIX$i" "$(host_addr "$i")" \
            "$(ip -n "$PREFIX$i" -s -j link show bt0 2>/dev/null | sed -n 's/.*"rx":{"bytes":\([0-9]*\).*/\1/p')" \
            "$(ip -n "$PREFIX$i" -s -j link show bt0 2>/dev/null | sed -n 's/.*"tx":{"bytes":\([0-9]*\).*/\1/p')" \
            "$q" "$limits"
    done
}

cmd_hostfile() {
    local slots=${1:-1} i
    [[ $slots =~ ^[0-9]+$ && $slots -ge 1 ]] || die "hostfile SLOTS must be a positive number, not '$slots'"
    [[ -n $(hosts) ]] || die "no hosts (testbed.sh up N first)"
    for i in $(hosts); do
        echo "$(host_addr "$i") slots=$slots"
    done
}

# exec I CMD...: CMD in host I's cgroups, network namespace, own hostname (UTS namespace,
# bt-h<I>: baton's stages report it) and, with hidden paths, its own mount namespace.
cmd_exec() {
    [[ $# -ge 2 ]] || die "usage: exec I CMD..."
    check_index "$1"
    local i=$1 d
    shift
    for d in $(cg_dirs "$i"); do
        echo $$ >"$d/cgroup.procs"
    done
    # The profile's added delay, for baton's transport (a test build applies it).
    if [[ -f $STATE/delay_us ]]; then
        export BT_LINK_DELAY_US
        BT_LINK_DELAY_US=$(cat "$STATE/delay_us")
    fi
    local setup="hostname $PREFIX$i"
    if [[ -f $STATE/$PREFIX$i.hide ]]; then
        local cover dir
        while IFS=$'\t' read -r cover dir; do
            setup+=" && mount --bind '$cover' '$dir'"
        done <"$STATE/$PREFIX$i.hide"
    fi
    # ip netns exec gives the command a mount namespace of its own already (for /sys); the
    # bind mounts made there stay private to it and its children.
    exec ip netns exec "$PREFIX$i" unshare --uts --mount --propagation private \
        bash -c "$setup && exec \"\$@\"" bash "$@"
}

cmd_down() {
    local i
    for i in $(hosts); do
        remove_host "$i"
    done
    # Leftovers of an interrupted up: veths whose namespace is gone, cgroups without a host.
    for i in $(ip -o link show 2>/dev/null | sed -n 's/^[0-9]*: bt-v\([0-9]\+\)[@:].*/\1/p'); do
        ip link del "bt-v$i" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    local d
    for d in "$CG_ROOT/memory/$CG_NAME" "$CG_ROOT/cpu/$CG_NAME" "$CG_ROOT/$CG_NAME"; do
        [[ -d $d ]] || continue
        local sub
        for sub in "$d"/"$PREFIX"*; do
            [[ -d $sub ]] || continue
            xargs -r kill -KILL <"$sub/cgroup.procs" 2>/dev/null || true
            rmdir "$sub" 2>/dev/null || true
        done
        rmdir "$d" 2>/dev/null || echo "testbed: cannot remove cgroup $d" >&2
    done
    rm -rf "$STATE"
    echo "testbed: down"
}

[[ $# -ge 1 ]] || { sed -n '2,36p' "$0"; exit 2; }
cmd=$1
shift
case $cmd in
-h | --help) sed -n '2,36p' "$0" ;;
up) need_root; cmd_up "$@" ;;
limit) need_root; cmd_limit "$@" ;;
shape) need_root; cmd_shape "$@" ;;
status) need_root; cmd_status ;;
hostfile) cmd_hostfile "$@" ;;
exec) need_root; cmd_exec "$@" ;;
down) need_root; cmd_down ;;
*) die "unknown command '$cmd' (up, limit, shape, status, hostfile, exec, down)" ;;
esac
