#!/usr/bin/env bash
# test_batch_crash.sh coordinator|stage|signal - `baton batch` is exactly once across crashes
# and signals (issue #10): a 2-stage job (deploy/baton-run, mpirun -np 3) over 48 requests (40 greedy, 8 with a
# per-request seed) is SIGKILLed again and again and rerun each time with the same command:
#   coordinator  SIGKILL of rank 0 before its first line, after 8 lines, after 20 lines, then
#                a crash in the middle of writing a line (BT_FAULT_BATCH_TORN_LINE: the
#                coordinator writes half of its 5th line and SIGKILLs itself);
#   stage        SIGKILL of stage rank 2 after 8, 20 and 32 lines, and of rank 1 after 40;
#   signal       SIGUSR1 to mpirun after 8 lines (Slurm's warning before a time limit: mpirun
#                forwards it, the stages ignore it, rank 0 drains: exit 75, the running
#                requests finished and written), then SIGTERM to rank 0 after 32 lines with
#                --drain-timeout 0 (the running requests are left for the next run: exit 75);
# then a last rerun finishes. The output must then hold exactly one line per custom_id, no
# torn line, every line equal (choices, usage) to an uninterrupted run's.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pick_model smol
case=${1:-coordinator}
marker="bt-batch-crash-$$-$RANDOM"
ROOT=$(cd "$MPI_DIR/../.." && pwd)
N=48

cleanup() {
    local left
    left=$(procs_matching "$marker")
    # shellcheck disable=SC2086
    [[ -n $left ]] && kill -KILL $left 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

python3 - "$WORK/in.jsonl" "$N" <<'EOF'
import json, sys
subjects = ["the sea", "a mountain", "bread", "the moon", "a library", "winter", "a train",
            "coffee", "a garden", "the city", "music", "a river"]
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        body = {"prompt": "Request %d. A short note about %s:" % (i, subjects[i % len(subjects)]),
                "max_tokens": 24, "temperature": 0}
        if i % 6 == 5:
            body.update(temperature=0.8, seed=1000 + i, top_p=0.9)
        f.write(json.dumps({"custom_id": "req-%03d" % i, "method": "POST",
                            "url": "/v1/completions", "body": body}) + "\n")
EOF

# run_batch OUT [ENV...] - the job, in the background ($job), stderr to $OUT.err; baton also
# gets the flags in the array EXTRA.
EXTRA=()
run_batch() {
    local out=$1
    shift
    env "$@" "$ROOT/deploy/baton-run" --baton "$BATON" --stages 2 --threads 1 \
        batch --model "$MODEL" --input "$WORK/in.jsonl" --output "$out" --max-seqs 4 \
        --ctx 512 --sync-lines 4 --model-name "$marker" "${EXTRA[@]}" >/dev/null \
        2>>"$out.err" &
    job=$!
}

lines_of() { [[ -f $1 ]] && wc -l <"$1" || echo 0; }

find_rank() {
    local pid
    for pid in $(procs_matching "$marker"); do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == baton ]] || continue
        [[ $(rank_of "$pid") == "$1" ]] && { echo "$pid"; return; }
    done
}

# wait_lines OUT LINES - until OUT has LINES lines (false if the job ended first).
wait_lines() {
    local deadline=$((SECONDS + 120))
    while ((SECONDS < deadline)); do
        kill -0 "$job" 2>/dev/null || return 1
        (($(lines_of "$1") >= $2)) && return 0
        sleep 0.05
    done
    return 1
}

# kill_at OUT RANK LINES - once OUT has LINES lines (0: once the run has started), SIGKILL the
# baton process of RANK; waits for the job to end.
kill_at() {
    local out=$1 rank=$2 at=$3 deadline=$((SECONDS + 120)) pid=""
    while ((SECONDS < deadline)); do
        if ! kill -0 "$job" 2>/dev/null; then
            fail "the job ended before $at lines (kill of rank $rank)"
            return
        fi
        if ((at == 0)) && grep -q 'to run, on' "$out.err" 2>/dev/null; then
            break
        fi
        if ((at > 0 && $(lines_of "$out") >= at)); then
            break
        fi
        sleep 0.05
    done
    pid=$(find_rank "$rank")
    if [[ -z $pid ]]; then
        fail "no process of rank $rank"
        return
    fi
    local before
    before=$(lines_of "$out")
    kill -KILL "$pid"
    wait "$job"
    local rc=$?
    [[ $rc -ne 0 ]] && pass "SIGKILL of rank $rank at $before lines: the job ended (exit $rc)" ||
        fail "SIGKILL of rank $rank at $before lines: exit 0"
}

# Uninterrupted.
run_batch "$WORK/ref.jsonl"
wait "$job"
rc=$?
[[ $rc -eq 0 ]] && pass "uninterrupted run: exit 0" || {
    fail "uninterrupted run: exit $rc"
    tail -20 "$WORK/ref.jsonl.err"
    finish
    exit
}
grep 'stage busy' "$WORK/ref.jsonl.err" | sed 's/^/     /'

OUT="$WORK/out.jsonl"
if [[ $case == coordinator ]]; then
    for at in 0 8 20; do
        run_batch "$OUT"
        kill_at "$OUT" 0 "$at"
    done
    run_batch "$OUT" BT_FAULT_BATCH_TORN_LINE=5
    wait "$job"
    rc=$?
    [[ $rc -ne 0 ]] && pass "crash while writing a line: the job ended (exit $rc)" ||
        fail "the torn-line fault did not fire (exit 0)"
    tail -c 1 "$OUT" | od -An -c | grep -q '\\n' && fail "no torn line was left to recover" ||
        pass "a torn line was left on disk"
elif [[ $case == signal ]]; then
    run_batch "$OUT"
    if wait_lines "$OUT" 8; then
        kill -USR1 "$job" # deploy/baton-run execs mpirun: $job is mpirun
        wait "$job"
        rc=$?
        n=$(lines_of "$OUT")
        [[ $rc -eq 75 ]] && pass "SIGUSR1 to mpirun: drained, exit 75 ($n lines)" ||
            fail "SIGUSR1 to mpirun: exit $rc, expected 75"
        grep -q 'SIGUSR1\|User defined signal 1' "$OUT.err" && pass "the signal is named" ||
            fail "the signal is not named"
        ((n < N)) || fail "the run finished before the signal: no drain was tested"
    else
        fail "no 8 lines before the job ended"
    fi
    EXTRA=(--drain-timeout 0) # what runs when the signal comes is left at once
    run_batch "$OUT"
    EXTRA=()
    if wait_lines "$OUT" 32; then
        kill -TERM "$(find_rank 0)"
        wait "$job"
        rc=$?
        [[ $rc -eq 75 ]] && pass "SIGTERM to rank 0 with --drain-timeout 0: exit 75" ||
            fail "SIGTERM to rank 0: exit $rc, expected 75"
        grep -qE '[0-9]+ left for the next run' "$OUT.err" && pass "running requests left for the next run" ||
            fail "no request was left for the next run"
    else
        fail "no 24 lines before the job ended"
    fi
else
    for at in 8 20 32; do
        run_batch "$OUT"
        kill_at "$OUT" 2 "$at"
    done
    run_batch "$OUT"
    kill_at "$OUT" 1 40
fi
run_batch "$OUT"
wait "$job"
rc=$?
[[ $rc -eq 0 ]] && pass "the last rerun finished: exit 0" || fail "the last rerun: exit $rc"
grep -E 'resuming|torn' "$OUT.err" | sed 's/^/     /'
if [[ $case == coordinator ]]; then
    grep -q 'dropped a torn last line' "$OUT.err" && pass "the torn line was dropped" ||
        fail "no torn line was dropped"
fi

python3 - "$WORK/ref.jsonl" "$OUT" "$N" <<'EOF'
import json, sys
def load(path):
    raw = open(path, "rb").read().decode()
    assert raw.endswith("\n"), "%s ends in a torn line" % path
    by = {}
    for n, line in enumerate(raw.splitlines(), 1):
        r = json.loads(line)  # a torn or garbled line fails here
        assert r["custom_id"] not in by, "%s: custom_id %s twice (line %d)" % (path, r["custom_id"], n)
        by[r["custom_id"]] = r
    return by
ref, out = load(sys.argv[1]), load(sys.argv[2])
n = int(sys.argv[3])
assert sorted(out) == ["req-%03d" % i for i in range(n)], "not one line per custom_id: %d lines" % len(out)
bad = []
for k in sorted(ref):
    a, b = ref[k]["response"], out[k]["response"]
    if a["status_code"] != 200 or b["status_code"] != 200:
        bad.append("%s: status %s / %s" % (k, a["status_code"], b["status_code"]))
        continue
    for field in ("choices", "usage"):
        if a["body"][field] != b["body"][field]:
            bad.append("%s: %s differ: %r != %r" % (k, field, a["body"][field], b["body"][field]))
print("\n".join(bad[:5]))
sys.exit(1 if bad else 0)
EOF
[[ $? -eq 0 ]] && pass "exactly one line per custom_id, each equal to the uninterrupted run's" ||
    fail "the output after crashes differs from the uninterrupted run"
finish
