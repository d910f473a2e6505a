#!/usr/bin/env bash
# test_batch_input.sh - `baton batch` on bad input and on its own output (issue #10,
# "Validation tests"): a file with malformed lines, no custom_id or a repeated one is refused
# whole (exit 2, every bad line named, nothing computed, no output written); an empty file and
# a 100 MB line are refused without holding the line; a line with an unknown url, a bad
# method, bad parameters, "stream", another model or a prompt over the context gets its own
# error record (400/404, the server's message) while the rest run (exit 3); a rerun skips what
# is done; another input, a foreign output and a torn last line are handled as documented.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_model
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bt_batch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
B=(batch --model "$MODEL" --threads 2 --ctx 256)

# check_lines FILE PY: runs the python expression PY over `lines` (the output's records,
# parsed; a line that is not JSON fails) and `by` (custom_id -> record).
check_lines() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
raw = open(sys.argv[1], "rb").read().decode()
assert raw.endswith("\n"), "the output does not end with a newline"
lines = [json.loads(l) for l in raw.splitlines()]
by = {}
for r in lines:
    assert r["custom_id"] not in by, "custom_id %s has two lines" % r["custom_id"]
    by[r["custom_id"]] = r
ok = eval("(" + sys.argv[2] + "\n)")
if not ok:
    print(json.dumps(lines, indent=1)[:3000])
sys.exit(0 if ok else 1)
EOF
}

# --- refused up front: every bad line named, no output ---
cat >"$WORK/bad.jsonl" <<'EOF'
{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}}
{not json
[1, 2]

{"method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}}
{"custom_id": "", "body": {}}
{"custom_id": 7, "body": {}}
{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": "y"}}
EOF
"$BATON" "${B[@]}" --input "$WORK/bad.jsonl" --output "$WORK/bad.out" 2>"$WORK/err"
rc=$?
sed 's/^/     /' "$WORK/err" | head -12
[[ $rc -eq 2 ]] && pass "malformed input: exit 2" || fail "malformed input: exit $rc, expected 2"
for want in 'line 2: not JSON' 'line 3' 'line 5: no "custom_id"' 'line 6' 'line 7' \
    'line 8: custom_id "a" repeats line 1'; do
    grep -qF -- "$want" "$WORK/err" && pass "names: $want" || fail "does not name: $want"
done
grep -q 'line 4' "$WORK/err" && fail "a blank line is named" || pass "blank lines are skipped"
[[ ! -s $WORK/bad.out ]] && pass "nothing written" || fail "an output was written"

: >"$WORK/empty.jsonl"
expect 2 'has no requests' -- "${B[@]}" --input "$WORK/empty.jsonl" --output "$WORK/e.out"
printf '\n  \n\r\n' >"$WORK/blank.jsonl"
expect 2 'has no requests' -- "${B[@]}" --input "$WORK/blank.jsonl" --output "$WORK/e.out"
expect 2 'no such file|cannot open|No such file' -- "${B[@]}" --input "$WORK/nope.jsonl" \
    --output "$WORK/e.out"
expect 2 '--output is required' -- "${B[@]}" --input "$WORK/bad.jsonl"
cp "$WORK/bad.jsonl" "$WORK/same.jsonl"
expect 2 'is the input file' -- "${B[@]}" --input "$WORK/same.jsonl" --output "$WORK/./same.jsonl"
cmp -s "$WORK/bad.jsonl" "$WORK/same.jsonl" && pass "the input given as output is untouched" ||
    fail "the input given as output was changed"

# A 100 MB line: refused by line number and limit, without being held in memory.
{
    echo '{"custom_id": "small", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}}'
    printf '{"custom_id": "big", "method": "POST", "url": "/v1/completions", "body": {"prompt": "'
    head -c 100000000 /dev/zero | tr '\0' 'a'
    echo '"}}'
} >"$WORK/big.jsonl"
/usr/bin/time -f '%M' -o "$WORK/rss" "$BATON" "${B[@]}" --input "$WORK/big.jsonl" \
    --output "$WORK/big.out" 2>"$WORK/err"
rc=$?
rss_kb=$(tail -1 "$WORK/rss")
sed 's/^/     /' "$WORK/err" | head -4
[[ $rc -eq 2 ]] && grep -q 'line 2 is longer than 16777216 bytes' "$WORK/err" &&
    pass "100 MB line refused by number and limit" || fail "100 MB line: exit $rc"
[[ $rss_kb -lt 80000 ]] && pass "max RSS ${rss_kb} KiB (the line was not held)" ||
    fail "max RSS ${rss_kb} KiB while refusing a 100 MB line"
rm -f "$WORK/big.jsonl"

# Lines are streamed: 200,000 lines (19 MB; refused by url, so nothing is computed) cost the
# coordinator a few MiB over a one-line input (8 bytes a line for the custom_id hashes).
python3 - "$WORK" <<'EOF'
import json, sys
for name, n in (("one", 1), ("many", 200000)):
    with open("%s/%s.jsonl" % (sys.argv[1], name), "w") as f:
        for i in range(n):
            f.write(json.dumps({"custom_id": "id-%07d" % i, "method": "POST",
                                "url": "/v1/embeddings", "body": {"input": "x"}}) + "\n")
EOF
for name in one many; do
    /usr/bin/time -f '%M' -o "$WORK/rss.$name" "$BATON" "${B[@]}" --input "$WORK/$name.jsonl" \
        --output "$WORK/$name.out" 2>"$WORK/err.$name"
    rc=$?
    [[ $rc -eq 3 ]] || fail "$name: exit $rc, expected 3: $(tail -3 "$WORK/err.$name")"
done
lines=$(wc -l <"$WORK/many.out")
growth=$(($(tail -1 "$WORK/rss.many") - $(tail -1 "$WORK/rss.one")))
[[ $lines -eq 200000 ]] && pass "200,000 lines, 200,000 records" || fail "$lines records"
[[ $growth -lt 8192 ]] && pass "200,000 lines cost ${growth} KiB over one line" ||
    fail "200,000 lines cost ${growth} KiB over one line (not streamed?)"
rm -f "$WORK"/many.*

# --- per-line errors: records with the server's status and message; the rest run ---
long=$(printf 'word %.0s' $(seq 400))
cat >"$WORK/in.jsonl" <<EOF
{"custom_id": "ok1", "method": "POST", "url": "/v1/completions", "body": {"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}}
{"custom_id": "url", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}
{"custom_id": "method", "method": "GET", "url": "/v1/completions", "body": {"prompt": "x"}}
{"custom_id": "nobody", "method": "POST", "url": "/v1/completions"}
{"custom_id": "temp", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x", "temperature": 200}}
{"custom_id": "stream", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x", "stream": true}}
{"custom_id": "model", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x", "model": "gpt-9"}}
{"custom_id": "ctx", "method": "POST", "url": "/v1/completions", "body": {"prompt": "$long"}}
{"custom_id": "ok2", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 5, "temperature": 0}}
EOF
"$BATON" "${B[@]}" --input "$WORK/in.jsonl" --output "$WORK/out.jsonl" 2>"$WORK/err"
rc=$?
sed 's/^/     /' "$WORK/err" | tail -6
[[ $rc -eq 3 ]] && pass "per-line errors: exit 3" || fail "per-line errors: exit $rc, expected 3"
check_lines "$WORK/out.jsonl" 'len(lines) == 9' && pass "one line per custom_id" ||
    fail "not one line per custom_id"
check_lines "$WORK/out.jsonl" '
    all(by[k]["response"]["status_code"] == 200 and by[k]["error"] is None
        and by[k]["response"]["body"]["choices"][0]["finish_reason"] == "length"
        for k in ("ok1", "ok2"))
    and by["ok1"]["response"]["body"]["object"] == "text_completion"
    and by["ok2"]["response"]["body"]["object"] == "chat.completion"
    and by["ok1"]["response"]["body"]["usage"]["completion_tokens"] == 6' &&
    pass "the good lines ran" || fail "the good lines did not run as asked"
for case in "url:400:url" "method:400:method" "nobody:400:body" "temp:400:temperature" \
    "stream:400:stream" "model:404:model" "ctx:400:prompt"; do
    IFS=: read -r id code param <<<"$case"
    check_lines "$WORK/out.jsonl" "
        by['$id']['response']['status_code'] == $code
        and by['$id']['response']['body']['error']['param'] == '$param'
        and len(by['$id']['response']['body']['error']['message']) > 10" &&
        pass "$id: status $code naming $param" || fail "$id: not status $code naming $param"
done
check_lines "$WORK/out.jsonl" '"context" in by["ctx"]["response"]["body"]["error"]["message"]
    and "256" in by["ctx"]["response"]["body"]["error"]["message"]' &&
    pass "ctx: the message gives the context" || fail "ctx: the message lacks the context"

# --- reruns ---
cp "$WORK/out.jsonl" "$WORK/first.jsonl"
expect 3 'every request already has a line' -- "${B[@]}" --input "$WORK/in.jsonl" \
    --output "$WORK/out.jsonl"
cmp -s "$WORK/out.jsonl" "$WORK/first.jsonl" && pass "a rerun of a finished job changes nothing" ||
    fail "a rerun of a finished job changed the output"
# A torn last line (a crash in the middle of a write) is dropped and its request run again.
head -n 8 "$WORK/first.jsonl" >"$WORK/out.jsonl"
tail -n 1 "$WORK/first.jsonl" | head -c 40 >>"$WORK/out.jsonl"
torn_id=$(tail -n 1 "$WORK/first.jsonl" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["custom_id"])')
"$BATON" "${B[@]}" --input "$WORK/in.jsonl" --output "$WORK/out.jsonl" 2>"$WORK/err"
rc=$?
grep -q 'dropped a torn last line (40 bytes)' "$WORK/err" && pass "torn line reported" ||
    fail "torn line not reported: $(cat "$WORK/err")"
[[ $rc -eq 3 ]] && check_lines "$WORK/out.jsonl" "len(lines) == 9 and '$torn_id' in by" &&
    pass "torn line's request ran again, once" || fail "after a torn line: exit $rc"
grep -q 'resuming: 8 of 9' "$WORK/err" && pass "resume counted 8 done" || fail "no resume count"
# Another input is refused; --restart starts over.
echo '{"custom_id": "new", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x", "max_tokens": 1}}' >>"$WORK/in.jsonl"
expect 2 'another input|different input' -- "${B[@]}" --input "$WORK/in.jsonl" \
    --output "$WORK/out.jsonl"
expect 3 '' -- "${B[@]}" --input "$WORK/in.jsonl" --output "$WORK/out.jsonl" --restart
check_lines "$WORK/out.jsonl" 'len(lines) == 10' && pass "--restart wrote every line once" ||
    fail "--restart did not write every line once"
# An output baton batch did not write is not touched.
echo '{"some": "thing"}' >"$WORK/foreign.jsonl"
expect 2 'not written by baton batch' -- "${B[@]}" --input "$WORK/in.jsonl" \
    --output "$WORK/foreign.jsonl"
[[ $(cat "$WORK/foreign.jsonl") == '{"some": "thing"}' ]] && pass "foreign output untouched" ||
    fail "foreign output changed"
finish
