# lib.sh - sourced by the test-bed tests (tests/netns/test_*.sh): pass/fail counters, and
# the checks that the test bed can run here (root, working `ip netns`, tc), else exit 77.
n_pass=0
n_fail=0
pass() { n_pass=$((n_pass + 1)); echo "ok   $*"; }
fail() { n_fail=$((n_fail + 1)); echo "FAIL $*"; }

if [[ $(id -u) -ne 0 ]]; then
    echo "SKIP: needs root (network namespaces, tc, cgroups)"
    exit 77
fi
probe=bt-probe-$$
if ! ip netns add "$probe" 2>/dev/null || ! ip netns exec "$probe" true 2>/dev/null; then
    ip netns del "$probe" 2>/dev/null
    echo "SKIP: 'ip netns' does not work here (iproute2 missing or no CAP_SYS_ADMIN)"
    exit 77
fi
ip netns del "$probe"
command -v tc >/dev/null || { echo "SKIP: tc (iproute2) not found"; exit 77; }
