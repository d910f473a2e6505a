#!/usr/bin/env bash
# test_info_plan.sh - `baton info --stages N --stage-mem ...` prints the memory-aware plan
# (split.h) of SmolLM2 without MPI: per stage layers, weights, KV, scratch, total and budget;
# budgets that fit keep the balanced split; a first stage short of its balanced share gets
# fewer layers; a budget below the requested KV shrinks the KV; a budget nothing fits is
# refused (exit 2) naming the stage and both numbers; bad --stage-mem values are named. A
# generate run with the shrinking budget gets that KV and warns naming the stage.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_model
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
plan=(info --model "$MODEL" --ctx 256 --max-batch 64 --max-seqs 4)

# rows FILE: "rank first last total budget" per stage row of the plan
rows() {
    awk '$1 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+-/ { split($3, r, "-");
         print $2, r[1], r[2], $8, $9 }' "$1"
}

"$BATON" "${plan[@]}" --stages 3 --stage-mem 1G >"$tmp/fit.out" 2>"$tmp/fit.err"
rc=$?
rows "$tmp/fit.out" >"$tmp/fit.rows"
n=$(wc -l <"$tmp/fit.rows")
cover=$(awk 'NR == 1 { f = $2 } { l = $3 } END { print f "-" l }' "$tmp/fit.rows")
if [[ $rc -eq 0 && $n -eq 3 && $cover == 0-29 ]] && grep -q '1024.0 (--stage-mem)' "$tmp/fit.out" &&
    awk '$4 > $5 { bad = 1 } END { exit bad }' "$tmp/fit.rows"; then
    pass "3 stages in 1 GiB each: a plan of 3 rows covering layers 0-29, each within its budget"
else
    fail "3 stages in 1 GiB: exit $rc, $n rows covering $cover"
    cat "$tmp/fit.out" "$tmp/fit.err"
fi

# The first stage 0.5 MiB short of its balanced total: fewer layers, and it fits.
t0=$(awk 'NR == 1 { print $4 }' "$tmp/fit.rows")
last0=$(awk 'NR == 1 { print $3 }' "$tmp/fit.rows")
b0=$(awk -v t="$t0" 'BEGIN { printf "%dK", (t - 0.5) * 1024 }')
"$BATON" "${plan[@]}" --stages 3 --stage-mem "$b0,1G,1G" >"$tmp/un.out" 2>"$tmp/un.err"
rc=$?
rows "$tmp/un.out" >"$tmp/un.rows"
new_last0=$(awk 'NR == 1 { print $3 }' "$tmp/un.rows")
if [[ $rc -eq 0 && -n $new_last0 && $new_last0 -lt $last0 ]] &&
    grep -q 'balanced split did not fit' "$tmp/un.out" &&
    awk '$4 > $5 { bad = 1 } END { exit bad }' "$tmp/un.rows"; then
    pass "first stage at $b0 (balanced total $t0 MiB): layers 0-$new_last0 instead of 0-$last0"
else
    fail "first stage at $b0: exit $rc, layers 0-$new_last0 (balanced 0-$last0)"
    cat "$tmp/un.out" "$tmp/un.err"
fi

# KV shrunk: 4096 tokens asked, a budget with room for about 1000.
"$BATON" "${plan[@]}" --stages 1 --kv-tokens 256 --stage-mem 1G >"$tmp/k1.out" 2>&1
t1=$(rows "$tmp/k1.out" | awk '{ print $4 }')
kvmib=$(awk '$1 == "0" { print $5 }' "$tmp/k1.out") # KV MiB of 256 tokens
bk=$(awk -v t="$t1" -v k="$kvmib" 'BEGIN { printf "%dK", (t + 3 * k) * 1024 }')
"$BATON" "${plan[@]}" --stages 1 --kv-tokens 4096 --stage-mem "$bk" >"$tmp/k.out" 2>"$tmp/k.err"
rc=$?
tok=$(awk '$1 == "0" { gsub(/[()]/, "", $6); print $6 }' "$tmp/k.out")
if [[ $rc -eq 0 && -n $tok && $tok -ge 1008 && $tok -lt 4096 ]] && grep -q 'KV shrunk to fit' "$tmp/k.out"; then
    pass "1 stage at $bk with 4096 KV tokens asked: KV shrunk to $tok tokens"
else
    fail "KV shrink at $bk: exit $rc, $tok tokens"
    cat "$tmp/k1.out" "$tmp/k.out" "$tmp/k.err"
fi

# The same budget on a real run: the stage is asked for the KV the plan gave it, and says so.
"$BATON" generate --model "$MODEL" --threads 1 --ctx 256 --max-batch 64 --max-seqs 4 \
    --kv-tokens 4096 --stage-mem "$bk" --prompt "Hello" --max-tokens 2 >"$tmp/g.out" 2>"$tmp/g.err"
rc=$?
if [[ $rc -eq 0 ]] && grep -q "stage rank 1 (layers 0-29 on .*): KV for $tok tokens, not the 4096 asked: its budget of .* MiB (--stage-mem) leaves no more" "$tmp/g.err"; then
    pass "generate at $bk: ran with KV for $tok tokens, warned"
else
    fail "generate at $bk: exit $rc"
    cat "$tmp/g.err"
fi

# Nothing fits: refused, naming the stage, what it needs and what it has.
"$BATON" "${plan[@]}" --stages 1 --stage-mem 50M >"$tmp/no.out" 2>"$tmp/no.err"
rc=$?
if [[ $rc -eq 2 ]] && grep -Eq 'stage rank 1 \(layers 0-29 of 1 stages\) needs [0-9.]+ MiB \(weights [0-9.]+ \+ KV [0-9.]+ for 256 tokens \+ scratch [0-9.]+ \+ overhead [0-9.]+\) but has 50\.0 MiB \(--stage-mem\)' "$tmp/no.err"; then
    pass "1 stage in 50 MiB: refused with exit 2: $(head -1 "$tmp/no.err")"
else
    fail "1 stage in 50 MiB: exit $rc"
    cat "$tmp/no.err"
fi

expect 2 "--stage-mem '1G,2G': 2 values for 3 stages" -- "${plan[@]}" --stages 3 --stage-mem 1G,2G
expect 2 "--stage-mem '12X': expected a size" -- "${plan[@]}" --stages 3 --stage-mem 12X
finish
