#!/usr/bin/env bash
# test_info_plan.sh - `baton info --stages N --stage-mem ...` prints the memory-aware plan
# (split.h) of SmolLM2 without MPI: per stage layers, weights, KV, scratch, total and budget;
# budgets that fit keep the balanced split; a first stage short of its balanced share gets
# fewer layers; a budget below the requested KV shrinks the KV; a budget nothing fits is
# refused (exit 2) naming the stage and both numbers; bad --stage-mem values are named. A
# generate run with the shrinking budget gets that KV and warns naming the stage.
# The measured split: `--stage-speed 1,1,0.5` prints each stage's speed and share of a token's
# time, and the slow stage gets fewer layers than with equal speeds (the compute split); bad
# --stage-speed values, a count that is not the stages', and --stage-speed with another --split
# are refused with exit 2; generate on 3 stage threads with --split measured probes each and
# logs its speed and layers, with --stage-speed takes the plan info printed, and gives the
# 1-stage ids either way.
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
# The measured split from given speeds.
mrows() { # FILE: "rank first last speed share" per row of the measured table
    awk '/^measured:/ { m = 1; next } m && $1 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+-/ {
         split($3, r, "-"); print $2, r[1], r[2], $4, $5 }' "$1"
}
"$BATON" "${plan[@]}" --stages 3 --split compute >"$tmp/c.out" 2>&1
"$BATON" "${plan[@]}" --stages 3 --stage-speed 1,1,0.5 >"$tmp/ms.out" 2>"$tmp/ms.err"
rc=$?
mrows "$tmp/ms.out" >"$tmp/ms.rows"
n_last=$(awk '$1 == 3 { print $3 - $2 + 1 }' "$tmp/ms.rows")
n_first=$(awk '$1 == 1 { print $3 - $2 + 1 }' "$tmp/ms.rows")
c_last=$(rows "$tmp/c.out" | awk '$1 == 3 { print $3 - $2 + 1 }')
speeds=$(awk '{ printf "%s ", $4 }' "$tmp/ms.rows")
if [[ $rc -eq 0 && $(wc -l <"$tmp/ms.rows") -eq 3 && $speeds == "1.000 1.000 0.500 " &&
      -n $c_last && $n_last -lt $c_last && $n_last -lt $n_first ]] &&
    awk '{ s += $5 } END { exit !(s > 99.8 && s < 100.2) }' "$tmp/ms.rows"; then
    pass "--stage-speed 1,1,0.5: the last stage gets $n_last layers (equal speeds: $c_last), shares $(awk '{ printf "%s ", $5 }' "$tmp/ms.rows")"
else
    fail "--stage-speed 1,1,0.5: exit $rc, speeds '$speeds', last $n_last layers (compute $c_last)"
    cat "$tmp/ms.out" "$tmp/ms.err"
fi
expect 2 "--stage-speed '1,0,1': value 2 '0' is not a positive number" -- "${plan[@]}" --stages 3 --stage-speed 1,0,1
expect 2 "--stage-speed '1,-2,1': value 2 '-2' is not a positive number" -- "${plan[@]}" --stages 3 --stage-speed 1,-2,1
expect 2 "--stage-speed '1,fast,1': value 2 'fast' is not a positive number" -- "${plan[@]}" --stages 3 --stage-speed 1,fast,1
expect 2 "--stage-speed '1,1': 2 values for 3 stages" -- "${plan[@]}" --stages 3 --stage-speed 1,1
expect 2 "the fastest stage is 10000 times the slowest, at most 1000" -- "${plan[@]}" --stages 3 --stage-speed 1,1,0.0001
expect 2 "--stage-speed '1,1,1' applies to --split measured, not --split memory" -- "${plan[@]}" --stages 3 --split memory --stage-speed 1,1,1
expect 2 "--split measured: info times no stages; give --stage-speed" -- "${plan[@]}" --stages 3 --split measured
expect 2 "--split 'fastest': expected 'memory', 'compute' or 'measured'" -- "${plan[@]}" --stages 3 --split fastest
gen=(generate --model "$MODEL" --threads 1 --ctx 256 --max-batch 64 --max-seqs 4 --temperature 0
     --max-tokens 6 --ignore-eos --print-ids --prompt "The quick brown fox")
expect 2 "--stage-speed '1,1': 2 values for 3 stages" -- "${gen[@]}" --stages 3 --stage-speed 1,1
expect 2 "--stage-speed '1,x,1': value 2 'x' is not a positive number" -- "${gen[@]}" --stages 3 --stage-speed 1,x,1

# generate on 3 stage threads: probed one at a time (or given), logged, the 1-stage ids.
glog() { # FILE: "rank speed first last" per logged stage
    sed -n 's/^baton: --split measured: stage rank \([0-9]*\) on .*: speed \([0-9.]*\) (.*): layers \([0-9]*\)-\([0-9]*\), .*/\1 \2 \3 \4/p' "$1"
}
"$BATON" "${gen[@]}" --stages 1 >"$tmp/g1.out" 2>"$tmp/g1.err"
grep -E '^output (ids|logprobs):' "$tmp/g1.err" >"$tmp/g1.ids"
"$BATON" "${gen[@]}" --stages 3 --split measured >"$tmp/gm.out" 2>"$tmp/gm.err"
rc=$?
grep -E '^output (ids|logprobs):' "$tmp/gm.err" >"$tmp/gm.ids"
glog "$tmp/gm.err" >"$tmp/gm.log"
if [[ $rc -eq 0 && -s $tmp/g1.ids && $(wc -l <"$tmp/gm.log") -eq 3 ]] &&
    grep -q 'stage rank 2 on .*: speed [0-9.]* (probe: [0-9.]* ms per layer pass, [0-9.]* cores)' "$tmp/gm.err" &&
    cmp -s "$tmp/g1.ids" "$tmp/gm.ids"; then
    pass "generate --stages 3 --split measured: 3 stages probed, $(awk '{ printf "%s:%s-%s ", $1, $3, $4 }' "$tmp/gm.log")the 1-stage ids"
else
    fail "generate --stages 3 --split measured: exit $rc"
    cat "$tmp/gm.err"
fi
"$BATON" "${gen[@]}" --stages 3 --stage-speed 1,1,0.5 >"$tmp/gs.out" 2>"$tmp/gs.err"
rc=$?
grep -E '^output (ids|logprobs):' "$tmp/gs.err" >"$tmp/gs.ids"
glog "$tmp/gs.err" >"$tmp/gs.log"
if [[ $rc -eq 0 ]] && cmp -s "$tmp/g1.ids" "$tmp/gs.ids" &&
    grep -q 'speed 0.500 (from --stage-speed)' "$tmp/gs.err" &&
    [[ $(awk '{ print $1, $3, $4 }' "$tmp/gs.log") == $(awk '{ print $1, $2, $3 }' "$tmp/ms.rows") ]]; then
    pass "generate --stages 3 --stage-speed 1,1,0.5: the plan info printed, the 1-stage ids"
else
    fail "generate --stages 3 --stage-speed 1,1,0.5: exit $rc"
    cat "$tmp/gs.err" "$tmp/ms.rows"
fi
finish
