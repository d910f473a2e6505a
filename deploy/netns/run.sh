#!/usr/bin/env bash
# run.sh - a baton job across the hosts of the test bed (deploy/netns/testbed.sh), one rank
# per host: rank 0 (the coordinator) on bt-h0, stage s on bt-h<s>, mpirun itself in the root
# namespace. Open MPI runs over TCP only, on the test subnet.
#
#   deploy/netns/run.sh [--hosts N] [--profile P] [--baton PATH] [--mpirun-arg ARG]...
#                       -- COMMAND [BATON FLAGS...]
#
#   deploy/netns/run.sh --hosts 3 --profile 1gbit -- generate --model M --prompt Hello
#
# --hosts N (default: every host that is up) ranks; fewer hosts than N up: `testbed.sh up N`
# first (the test bed stays up afterwards: `testbed.sh down`). --profile: `testbed.sh shape P`
# first (RATE[+DELAY], e.g. 1gbit+1ms). A profile with an added delay (this one or the one
# the test bed has) needs a test build of baton (`baton --version`: "link delay: built in");
# any other is refused here, before mpirun. The ranks get BT_LINK_DELAY_US from the hosts
# (testbed.sh exec, which mpi-agent runs) and from mpirun (-x). --baton: the program (default $BATON, else build/coordinator/baton); any MPI program
# works. The model must be visible in the hosts: they share this filesystem unless a path is
# hidden (testbed.sh limit I --hide PATH).
#
# The mpirun flags (overridable with --mpirun-arg, which comes later on the command line):
#   --hostfile (testbed.sh hostfile: one slot per host, so ranks fill the hosts in order)
#   --mca plm_rsh_agent deploy/netns/mpi-agent   orted started inside each host, not by ssh
#   --mca plm_rsh_no_tree_spawn 1                 mpirun starts every orted itself
#   --mca pml ob1 --mca btl tcp,self              TCP between ranks; no shared memory
#                                                 (vader), no UCX/OFI that would bypass it
#   --mca oob_tcp_if_include, btl_tcp_if_include 198.18.0.0/24 (the test subnet)
#   --bind-to none, --allow-run-as-root (as root), mpi_yield_when_idle 1
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
n=""
profile=""
baton="${BATON:-$here/../../build/coordinator/baton}"
extra=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --hosts) n=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    --baton) baton=$2; shift 2 ;;
    --mpirun-arg) extra+=("$2"); shift 2 ;;
    --) shift; break ;;
    -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option '$1' (see --help; baton's flags go after --)" >&2; exit 2 ;;
    esac
done
[[ $# -ge 1 ]] || { echo "run.sh: missing the baton command after -- (see --help)" >&2; exit 2; }
[[ -x $baton ]] || { echo "run.sh: '$baton' is not an executable (build it, or --baton PATH)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "run.sh: mpirun not found (deploy/install-deps.sh)" >&2; exit 2; }

up=$(ip netns list 2>/dev/null | grep -c '^bt-h[0-9]' || true)
if [[ -n $n ]]; then
    [[ $n =~ ^[0-9]+$ && $n -ge 1 ]] || { echo "run.sh: --hosts must be a positive number, not '$n'" >&2; exit 2; }
    [[ $up -ge $n ]] || "$here/testbed.sh" up "$n" >&2
else
    n=$up
    [[ $n -ge 1 ]] || { echo "run.sh: no test bed hosts (--hosts N, or testbed.sh up N)" >&2; exit 2; }
fi
[[ -z $profile ]] || "$here/testbed.sh" shape "$profile" >&2
delay_us=$(cat /run/bt-testbed/delay_us 2>/dev/null || echo 0)
if [[ $delay_us -gt 0 ]]; then
    if ! "$baton" --version 2>/dev/null | grep -q '^link delay: built in'; then
        echo "run.sh: profile '$(cat /run/bt-testbed/profile)' adds a link delay of $delay_us us, which" \
            "only a test build of baton applies (cmake -DBT_LINK_DELAY=ON); '$baton' says:" \
            "'$("$baton" --version 2>&1 | grep '^link delay' || echo "no link delay line")'" >&2
        exit 2
    fi
    export BT_LINK_DELAY_US=$delay_us
    extra=(-x BT_LINK_DELAY_US "${extra[@]}")
fi

hostfile=$(mktemp "${TMPDIR:-/tmp}/bt-netns-hosts.XXXXXX")
trap 'rm -f "$hostfile"' EXIT
"$here/testbed.sh" hostfile 1 | sed -n "1,${n}p" >"$hostfile"

# shellcheck disable=SC2054 # the commas belong to the value tcp,self
flags=(-np "$n" --hostfile "$hostfile" --bind-to none
    --mca plm_rsh_agent "$here/mpi-agent" --mca plm_rsh_no_tree_spawn 1
    --mca pml ob1 --mca btl tcp,self
    --mca oob_tcp_if_include 198.18.0.0/24 --mca btl_tcp_if_include 198.18.0.0/24
    --mca mpi_yield_when_idle 1)
[[ $(id -u) -eq 0 ]] && flags+=(--allow-run-as-root)
cmd=$1
shift
rc=0
# Under mpirun-guard, as deploy/baton-run runs it (an mpirun that hangs after its ranks end).
"$here/../mpirun-guard" mpirun "${flags[@]}" "${extra[@]}" "$baton" "$cmd" "$@" || rc=$?
exit "$rc"
