#!/usr/bin/env bash
# test_slurm_batch.sh - `baton batch` as a real Slurm job (deploy/slurm/baton-batch.sbatch) on
# the real single-node Slurm of deploy/slurm/ci-cluster.sh, with 2 stages (3 ranks on the
# machine's cores: sbatch --overcommit):
#   1. 60 completions (distinct prompts, temperature 0) as one sbatch job under mpirun:
#      exactly one line per custom_id, all status 200, and for 6 of them the text equals
#      `baton generate`'s greedy output for the same prompt and max tokens.
#   2. 150 longer completions (srun --mpi=pmix where Slurm has it, else mpirun); once the
#      output has some lines but not all, `scontrol requeue` the job (Slurm kills every rank);
#      the requeued run resumes: in the end exactly one line per custom_id, no torn line,
#      all 200, and greedy lines (written before and after the requeue) equal generate's.
#   3. 100 completions under mpirun, 16 at a time; SIGUSR1 to the batch shell (scancel --batch, what
#      --signal=B:USR1@60 does before the time limit): forwarded to every rank, baton batch
#      drains and exits 75, the script requeues, the next run finishes; one line per
#      custom_id, greedy lines equal generate's.
# Needs root (the daemons run as root) and Slurm (installed with apt-get if missing): else
# exit 77, like a missing model. ctest: slurm.test_slurm_batch (labels slurm, model).
set -uo pipefail
: "${BATON:?BATON must point to the baton binary}"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$root/tests/e2e/lib.sh"

if [[ $(id -u) -ne 0 ]]; then
    echo "SKIP: not root (the Slurm daemons of deploy/slurm/ci-cluster.sh run as root)"
    exit 77
fi
need_model
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
    ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    echo "installing slurm-wlm munge (apt-get)"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurm-wlm munge >/dev/null 2>&1; then
        echo "SKIP: Slurm is not installed and apt-get cannot install slurm-wlm munge"
        exit 77
    fi
fi
if ! "$BATON" batch --help >/dev/null 2>&1; then
    echo "FAIL: $BATON has no batch command"
    exit 1
fi

tmp=$(mktemp -d /tmp/bt-slurm-test.XXXXXX)
chmod 0755 "$tmp" # munged (user munge) must reach its socket inside
# Ports of our own, so that a cluster someone runs by hand on the default ports stays.
export BT_SLURM_DIR=$tmp/cluster BT_SLURM_CTLD_PORT=${BT_SLURM_CTLD_PORT:-16817}
export BT_SLURM_D_PORT=${BT_SLURM_D_PORT:-16818}
cluster=$root/deploy/slurm/ci-cluster.sh
cleanup() {
    "$cluster" down >/dev/null 2>&1 || "$cluster" down
    rm -rf "$tmp"
}
trap cleanup EXIT
if ! "$cluster" up; then
    echo "FAIL: deploy/slurm/ci-cluster.sh up"
    exit 1
fi
eval "$("$cluster" env)"
export SLURM_CONF

# make_input FILE N MAX_TOKENS: N completions requests, distinct prompts, greedy.
make_input() {
    python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
path, n, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
topics = ["the sea", "a red fox", "the moon", "old clocks", "bread", "a mountain", "rain",
          "a library", "trains", "the desert"]
with open(path, "w") as f:
    for i in range(n):
        prompt = "Note %d: a short story about %s begins" % (i, topics[i % len(topics)])
        f.write(json.dumps({"custom_id": "req-%d" % i, "method": "POST",
                            "url": "/v1/completions",
                            "body": {"prompt": prompt, "max_tokens": max_tokens,
                                     "temperature": 0, "ignore_eos": True}}) + "\n")
EOF
}

# check_output INPUT OUTPUT: every line whole JSON ending in a newline, exactly one line per
# custom_id of INPUT, every status 200 with a text; prints "custom_id<TAB>prompt" for the
# ids given in $SAMPLE (space separated) to stdout, what is wrong to stderr (status 1).
check_output() {
    python3 - "$1" "$2" <<'EOF'
import json, os, sys
inp, out = sys.argv[1], sys.argv[2]
want = {}
for line in open(inp):
    j = json.loads(line)
    want[j["custom_id"]] = j["body"]["prompt"]
data = open(out, "rb").read()
bad = []
if data and not data.endswith(b"\n"):
    bad.append("torn last line: %r" % data[-80:])
seen = {}
for k, raw in enumerate(data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n")):
    try:
        j = json.loads(raw)
    except ValueError as e:
        bad.append("line %d is not JSON (%s): %r" % (k + 1, e, raw[:80]))
        continue
    cid = j.get("custom_id")
    if cid in seen:
        bad.append("custom_id %s on lines %d and %d" % (cid, seen[cid][0], k + 1))
    if cid not in want:
        bad.append("line %d: custom_id %r is not in the input" % (k + 1, cid))
    r = j.get("response") or {}
    if r.get("status_code") != 200 or j.get("error") is not None:
        bad.append("line %d (%s): status %r error %r" % (k + 1, cid, r.get("status_code"),
                                                        j.get("error")))
    seen[cid] = (k + 1, j)
missing = [c for c in want if c not in seen]
if missing:
    bad.append("%d custom_ids have no line, e.g. %s" % (len(missing), missing[:5]))
for b in bad[:20]:
    print(b, file=sys.stderr)
if bad:
    sys.exit(1)
print("%d lines, one per custom_id, all 200" % len(seen), file=sys.stderr)
for cid in os.environ.get("SAMPLE", "").split():
    text = seen[cid][1]["response"]["body"]["choices"][0]["text"]
    print("%s\t%s\t%s" % (cid, json.dumps(want[cid]), json.dumps(text)))
EOF
}

# check_greedy LIST MAX_TOKENS WHAT: for each "id<TAB>prompt json<TAB>text json" line of LIST,
# the batch text equals `baton generate --temperature 0 --ignore-eos`'s stdout (which ends in
# one newline) for the same prompt and max tokens, as tests/server/test_equal_generate.py
# compares.
check_greedy() {
    local cid prompt text gen
    while IFS=$'\t' read -r cid prompt text; do
        prompt=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]), end="")' "$prompt")
        # The x keeps $(...) from dropping newlines the text itself ends in; then generate's
        # own final newline goes, and the two compare as JSON strings.
        if ! gen=$("$BATON" generate --model "$MODEL" --stages 2 --threads 1 --temperature 0 \
            --ignore-eos --max-tokens "$2" --prompt "$prompt" 2>/dev/null && printf x); then
            fail "$3: baton generate for $cid failed"
            continue
        fi
        gen=${gen%x}
        gen=${gen%$'\n'}
        gen=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$gen")
        if [[ $gen == "$text" ]]; then
            pass "$3: $cid: batch text equals baton generate's ($text)"
        else
            fail "$3: $cid: batch text $text, baton generate $gen"
        fi
    done <"$1"
}

# ids FILE: the custom_id of every whole JSON line of FILE (a torn last line is skipped).
ids() {
    python3 -c '
import json, sys
for line in open(sys.argv[1], "rb"):
    try:
        print(json.loads(line)["custom_id"])
    except ValueError:
        pass' "$1"
}

# wait_job JOBID SECONDS: polls (0.5 s) until the job has ended or the deadline passed; prints
# its last state.
wait_job() {
    local deadline=$((SECONDS + $2)) state=""
    while [[ $SECONDS -lt $deadline ]]; do
        state=$(job_field "$1" JobState)
        case $state in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE) break ;; esac
        sleep 0.5
    done
    echo "$state"
}

job_field() { scontrol show job "$1" 2>/dev/null | grep -o "$2=[^ ]*" | head -n 1 | cut -d= -f2; }

sbatch_args=(--overcommit --cpus-per-task=1 --chdir="$tmp")
export BATON_MODEL=$MODEL BATON_BIN=$BATON BATON_STAGES=2 BATON_MPIRUN_GUARD=$root/deploy/mpirun-guard

# --- 1. 60 requests, one job, mpirun inside the allocation ---
make_input "$tmp/in1.jsonl" 60 12
start=$SECONDS
# sbatch --wait polls with growing sleeps (tens of seconds late): poll the job ourselves.
jid=$(BATON_INPUT=$tmp/in1.jsonl BATON_OUTPUT=$tmp/out1.jsonl BATON_LAUNCH=mpirun \
    sbatch --parsable "${sbatch_args[@]}" --output="$tmp/job1-%j.log" \
    "$root/deploy/slurm/baton-batch.sbatch") || { fail "job 1: sbatch refused"; finish; exit 1; }
state=$(wait_job "$jid" 300)
exitcode=$(job_field "$jid" ExitCode)
echo "--- job 1 ($jid) log:"
grep -v '^ ' "$tmp/job1-$jid.log" | tail -n 15
if [[ $state == COMPLETED && $exitcode == 0:0 ]]; then
    pass "job 1: baton-batch.sbatch (2 stages, mpirun, 60 requests) COMPLETED, exit 0, in $((SECONDS - start)) s"
else
    fail "job 1: state '$state' ExitCode=$exitcode (want COMPLETED 0:0)"
fi
if SAMPLE="req-0 req-7 req-19 req-33 req-48 req-59" check_output "$tmp/in1.jsonl" \
    "$tmp/out1.jsonl" >"$tmp/sample1"; then
    pass "job 1: 60 lines, exactly one per custom_id, all status 200"
    check_greedy "$tmp/sample1" 12 "job 1"
else
    fail "job 1: output $tmp/out1.jsonl is wrong (above)"
fi

# --- 2. 150 longer requests, scontrol requeue mid-run ---
launch=mpirun
srun --mpi=list 2>&1 | grep -q pmix && launch=srun
n2=150
make_input "$tmp/in2.jsonl" $n2 24
jid=$(BATON_INPUT=$tmp/in2.jsonl BATON_OUTPUT=$tmp/out2.jsonl BATON_LAUNCH=$launch \
    sbatch --parsable "${sbatch_args[@]}" --output="$tmp/job2-%j.log" \
    "$root/deploy/slurm/baton-batch.sbatch") || { fail "job 2: sbatch refused"; finish; exit 1; }
echo "job 2: $jid (BATON_LAUNCH=$launch, $n2 requests of 24 tokens)"
deadline=$((SECONDS + 300))
lines=0
while [[ $SECONDS -lt $deadline ]]; do
    lines=$(cat "$tmp/out2.jsonl" 2>/dev/null | wc -l)
    [[ $lines -gt 0 ]] && break
    sleep 0.5
done
state=$(job_field "$jid" JobState)
if [[ $lines -gt 0 && $lines -lt $n2 && $state == RUNNING ]]; then
    scontrol requeue "$jid"
    pass "job 2: scontrol requeue $jid while running with $lines of $n2 lines written"
    ids "$tmp/out2.jsonl" >"$tmp/before"
else
    fail "job 2: no point to requeue at: $lines of $n2 lines, state $state"
fi
# Wait for the requeued run to finish (a requeued job may start again 5 s later).
state=$(wait_job "$jid" 480)
restarts=$(job_field "$jid" Restarts)
echo "--- job 2 log:"
grep -v '^ ' "$tmp/job2-$jid.log" | tail -n 25
if [[ $state == COMPLETED && ${restarts:-0} -ge 1 ]]; then
    pass "job 2: requeued (Restarts=$restarts) and COMPLETED"
else
    fail "job 2: state '$state' Restarts=${restarts:-?} (want COMPLETED after a requeue)"
fi
if grep -q "run $((restarts + 1)):.*done: every request" "$tmp/job2-$jid.log"; then
    pass "job 2: the requeued run (run $((restarts + 1))) finished the batch"
else
    fail "job 2: no 'done' line from run $((restarts + 1)) in the job log"
fi
# Sample: up to 3 lines written before the requeue, the rest of 6 after.
before=$(head -n 3 "$tmp/before" 2>/dev/null | tr '\n' ' ')
n_before=$(wc -w <<<"$before")
after=$(ids "$tmp/out2.jsonl" | grep -vxF -f "$tmp/before" | tail -n $((6 - n_before)) | tr '\n' ' ')
echo "job 2: sample written before the requeue: $before; after: $after"
if SAMPLE="$before $after" check_output "$tmp/in2.jsonl" "$tmp/out2.jsonl" >"$tmp/sample2"; then
    pass "job 2: $n2 lines, exactly one per custom_id, no torn line, all status 200"
    if [[ $(wc -l <"$tmp/sample2") -ge 5 ]]; then
        check_greedy "$tmp/sample2" 24 "job 2"
    else
        fail "job 2: fewer than 5 sample lines ($before / $after)"
    fi
else
    fail "job 2: output $tmp/out2.jsonl is wrong (above)"
fi


# --- 3. the time-limit path: SIGUSR1 to the batch shell (what --signal=B:USR1@60 sends) ---
# The script forwards it to mpirun, mpirun to every rank, rank 0 drains and exits 75, the
# script requeues the job and the next run finishes. At most 16 requests are admitted at
# once and the drain lets them run 2 s: signalled with fewer than 100 - 16 lines, some
# requests were never admitted, so the run cannot be complete (else a drain that finishes
# everything rightly exits 0).
n3=100
make_input "$tmp/in3.jsonl" $n3 24
jid=$(BATON_INPUT=$tmp/in3.jsonl BATON_OUTPUT=$tmp/out3.jsonl BATON_LAUNCH=mpirun \
    BATON_ARGS="--max-seqs 16 --max-queue 16 --drain-timeout 2" \
    sbatch --parsable "${sbatch_args[@]}" --output="$tmp/job3-%j.log" \
    "$root/deploy/slurm/baton-batch.sbatch") || { fail "job 3: sbatch refused"; finish; exit 1; }
echo "job 3: $jid (mpirun, $n3 requests of 24 tokens, 16 at a time)"
deadline=$((SECONDS + 300))
lines=0
while [[ $SECONDS -lt $deadline ]]; do
    lines=$(cat "$tmp/out3.jsonl" 2>/dev/null | wc -l)
    [[ $lines -gt 0 ]] && break
    sleep 0.5
done
if [[ $lines -gt 0 && $lines -lt $((n3 - 16)) ]]; then
    scancel --batch --signal=USR1 "$jid"
    ids "$tmp/out3.jsonl" >"$tmp/before3"
    pass "job 3: scancel --batch --signal=USR1 $jid with $lines of $n3 lines written"
else
    fail "job 3: no point to signal at: $lines of $n3 lines (want 1 to $((n3 - 17)))"
fi
state=$(wait_job "$jid" 480)
restarts=$(job_field "$jid" Restarts)
echo "--- job 3 log:"
grep -v '^ ' "$tmp/job3-$jid.log" | tail -n 25
if grep -q "run 1: got SIGUSR1" "$tmp/job3-$jid.log" &&
    grep -q "run 1: interrupted (exit 75): scontrol requeue" "$tmp/job3-$jid.log"; then
    pass "job 3: run 1 forwarded SIGUSR1, baton batch drained and exited 75, the script requeued the job"
else
    fail "job 3: run 1 did not end with 'interrupted (exit 75): scontrol requeue'"
fi
if [[ $state == COMPLETED && ${restarts:-0} -ge 1 ]] &&
    grep -q "run $((restarts + 1)):.*done: every request" "$tmp/job3-$jid.log"; then
    pass "job 3: requeued (Restarts=$restarts), run $((restarts + 1)) finished, COMPLETED"
else
    fail "job 3: state '$state' Restarts=${restarts:-?} (want COMPLETED after a requeue, with a done line)"
fi
before=$(head -n 3 "$tmp/before3" 2>/dev/null | tr '\n' ' ')
n_before=$(wc -w <<<"$before")
after=$(ids "$tmp/out3.jsonl" | grep -vxF -f "$tmp/before3" | tail -n $((6 - n_before)) | tr '\n' ' ')
if SAMPLE="$before $after" check_output "$tmp/in3.jsonl" "$tmp/out3.jsonl" >"$tmp/sample3"; then
    pass "job 3: $n3 lines, exactly one per custom_id, no torn line, all status 200"
    check_greedy "$tmp/sample3" 24 "job 3"
else
    fail "job 3: output $tmp/out3.jsonl is wrong (above)"
fi

finish
