#!/usr/bin/env bash
# ci-cluster.sh - a real single-node Slurm on this machine, from Debian's packages, without
# systemd: for trying the sbatch scripts in this directory and for CI (tests/slurm/).
#
#   deploy/slurm/ci-cluster.sh up       install slurm-wlm and munge if missing, start munged,
#                                       slurmctld and slurmd, wait until the node is idle
#   deploy/slurm/ci-cluster.sh down     stop every daemon `up` started, remove the state dir
#   deploy/slurm/ci-cluster.sh status   sinfo (and which daemons run)
#   deploy/slurm/ci-cluster.sh env      the line to eval in a shell that uses the cluster:
#                                       eval "$(deploy/slurm/ci-cluster.sh env)"
#
# Runs as root (the daemons run as root, munged as the munge user). Idempotent: `up` on a
# running cluster only waits for the node; `down` on a stopped one does nothing.
#
# Everything lives in one state directory, BT_SLURM_DIR (default /tmp/baton-slurm):
#   slurm.conf          the configuration; callers export SLURM_CONF=$BT_SLURM_DIR/slurm.conf
#                       (the daemons get it with -f)
#   munge/              munged's key (a copy of /etc/munge/munge.key, made if missing),
#                       socket, pid file, log and seed: slurm finds the socket through
#                       AuthInfo=socket=..., so a system munged, if any, is left alone
#   ctld/ d/            slurmctld's state, slurmd's spool
#   *.pid *.log         the daemons' pid files and logs
# Ports: BT_SLURM_CTLD_PORT (6817) and BT_SLURM_D_PORT (6818).
#
# The configuration: the node line is `slurmd -C`'s (the real cores and memory);
# ProctrackType=proctrack/pgid and TaskPlugin=task/none (no cgroups needed, works in a
# container); SelectType=select/cons_tres with CR_Core (memory not a consumable resource), so
# a job may ask for more tasks than cores with --overcommit (baton's coordinator sleeps while
# it waits: 2 stages + coordinator = 3 ranks run on 2 cores); one partition "batch", the
# default, without a time limit; a requeued job may start again after 5 s
# (cred_expire, 120 s by default).
set -euo pipefail

dir=${BT_SLURM_DIR:-/tmp/baton-slurm}
ctld_port=${BT_SLURM_CTLD_PORT:-6817}
d_port=${BT_SLURM_D_PORT:-6818}
conf=$dir/slurm.conf

die() {
    echo "ci-cluster: $*" >&2
    exit 1
}

# alive PIDFILE: the pid in PIDFILE names a running process.
alive() {
    local pid
    [[ -r $1 ]] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# wait_for SECONDS WHAT COMMAND...: runs COMMAND every 0.5 s until it succeeds or the
# deadline passes (then says what it waited for and fails).
wait_for() {
    local secs=$1 what=$2
    local deadline=$((SECONDS + secs))
    shift 2
    until "$@"; do
        if [[ $SECONDS -ge $deadline ]]; then
            echo "ci-cluster: waited $secs s for $what" >&2
            return 1
        fi
        sleep 0.5
    done
}

# stop NAME PIDFILE: SIGTERM, then SIGKILL after 10 s.
stop() {
    local name=$1 file=$2 pid
    alive "$file" || { rm -f "$file"; return 0; }
    pid=$(cat "$file")
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for 10 "$name to exit" bash -c "! kill -0 $pid 2>/dev/null"; then
        echo "ci-cluster: $name (pid $pid) ignored SIGTERM for 10 s: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 5 "$name to die" bash -c "! kill -0 $pid 2>/dev/null" || die "$name (pid $pid) does not exit"
    fi
    rm -f "$file"
    echo "ci-cluster: stopped $name (pid $pid)"
}

install_packages() {
    local need=()
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null ||
        need+=(slurm-wlm)
    command -v munged >/dev/null || need+=(munge)
    [[ ${#need[@]} -eq 0 ]] && return 0
    echo "ci-cluster: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" ||
        { apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; } ||
        die "cannot install ${need[*]}"
}

node_idle() {
    local state
    state=$(SLURM_CONF=$conf sinfo -h -N -o '%t' 2>/dev/null) || return 1
    [[ $state == idle || $state == mix || $state == alloc ]]
}

write_conf() {
    local host node
    host=$(hostname -s)
    # slurmd -C: "NodeName=vm CPUs=2 ... RealMemory=24105" then "UpTime=...".
    node=$(slurmd -C | grep '^NodeName=') || die "slurmd -C printed no NodeName line"
    cat >"$conf.tmp" <<EOF
# Written by deploy/slurm/ci-cluster.sh: a single-node Slurm for tests. Do not edit.
ClusterName=baton
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=5
MpiDefault=none
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobRequeue=1
ReturnToService=2
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
JobCompType=jobcomp/none
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=30
MinJobAge=300
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=batch Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$conf.tmp" "$conf"
}

start_munge() {
    local m=$dir/munge
    alive "$m/munged.pid" && return 0
    id munge >/dev/null 2>&1 || die "no munge user (is the munge package installed?)"
    install -d -m 0755 -o munge -g munge "$m"
    if [[ ! -s $m/munge.key ]]; then
        if [[ -s /etc/munge/munge.key ]]; then
            install -m 0400 -o munge -g munge /etc/munge/munge.key "$m/munge.key"
        else
            # The package normally makes /etc/munge/munge.key; make one if it did not.
            mungekey --create --keyfile="$m/munge.key" 2>/dev/null ||
                dd if=/dev/urandom of="$m/munge.key" bs=1024 count=1 status=none
            chown munge:munge "$m/munge.key"
            chmod 0400 "$m/munge.key"
        fi
    fi
    runuser -u munge -- munged --key-file="$m/munge.key" --socket="$m/munge.socket" \
        --pid-file="$m/munged.pid" --log-file="$m/munged.log" --seed-file="$m/munged.seed" ||
        die "munged did not start: $(tail -n 5 "$m/munged.log" 2>/dev/null)"
    wait_for 10 munged alive "$m/munged.pid" || die "munged wrote no pid file ($m/munged.log)"
    wait_for 10 "munge socket" test -S "$m/munge.socket" || die "no munge socket $m/munge.socket"
    echo "ci-cluster: munged running (pid $(cat "$m/munged.pid"))"
}

up() {
    [[ $(id -u) -eq 0 ]] || die "run as root (the daemons run as root)"
    install_packages
    install -d -m 0755 "$dir" "$dir/ctld" "$dir/d"
    [[ -s $conf ]] || write_conf
    start_munge
    if ! alive "$dir/slurmctld.pid"; then
        slurmctld -f "$conf" || die "slurmctld did not start: $(tail -n 5 "$dir/slurmctld.log" 2>/dev/null)"
        wait_for 20 slurmctld alive "$dir/slurmctld.pid" || die "slurmctld is not running ($dir/slurmctld.log)"
        echo "ci-cluster: slurmctld running (pid $(cat "$dir/slurmctld.pid"))"
    fi
    if ! alive "$dir/slurmd.pid"; then
        slurmd -f "$conf" || die "slurmd did not start: $(tail -n 5 "$dir/slurmd.log" 2>/dev/null)"
        wait_for 20 slurmd alive "$dir/slurmd.pid" || die "slurmd is not running ($dir/slurmd.log)"
        echo "ci-cluster: slurmd running (pid $(cat "$dir/slurmd.pid"))"
    fi
    if ! wait_for 60 "the node" node_idle; then
        SLURM_CONF=$conf sinfo -N -l >&2 || true
        tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
        die "the node did not become idle in 60 s"
    fi
    SLURM_CONF=$conf sinfo
    echo "ci-cluster: up; use it with: export SLURM_CONF=$conf"
}

down() {
    [[ -d $dir ]] || { echo "ci-cluster: nothing to stop ($dir does not exist)"; return 0; }
    [[ $(id -u) -eq 0 ]] || die "run as root"
    # Jobs first, so that slurmd does not leave their processes behind.
    if alive "$dir/slurmctld.pid"; then
        SLURM_CONF=$conf scancel --full --quiet --user=root 2>/dev/null || true
        wait_for 30 "jobs to end" bash -c "[[ -z \$(SLURM_CONF='$conf' squeue -h -t R,CG 2>/dev/null) ]]" || true
    fi
    stop slurmd "$dir/slurmd.pid"
    stop slurmctld "$dir/slurmctld.pid"
    stop munged "$dir/munge/munged.pid"
    rm -rf "$dir"
    echo "ci-cluster: down"
}

status() {
    local name file
    for name in munged slurmctld slurmd; do
        file=$dir/$name.pid
        [[ $name == munged ]] && file=$dir/munge/munged.pid
        if alive "$file"; then echo "$name: running (pid $(cat "$file"))"; else echo "$name: not running"; fi
    done
    [[ -r $conf ]] || { echo "no cluster at $dir"; return 1; }
    SLURM_CONF=$conf sinfo
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
env) echo "export SLURM_CONF=$conf" ;;
*)
    sed -n '2,15p' "$0" >&2
    exit 2
    ;;
esac
