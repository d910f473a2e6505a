#!/usr/bin/env bash
# honest_skips.sh - a test that cannot run says so: data shipped with the repository is
# required (test_tokenizer without tests/data fails), only the real model may be absent (a test
# that needs it exits 77 without it, and ctest counts it as skipped, not passed).
# Usage: honest_skips.sh TEST_TOKENIZER TEST_GGUF BUILD_DIR   (from ctest: unit.honest_skips)
set -uo pipefail
tokenizer=$1 gguf=$2 build=$3
n_fail=0
fail() { echo "FAIL $*"; n_fail=$((n_fail + 1)); }
no_model=/nonexistent/SmolLM2-135M-Instruct.Q4_1.gguf

# 1. Shipped data missing: a failure, with or without the model.
for model in "${BATON_MODEL:-$no_model}" "$no_model"; do
    out=$(BT_TEST_DATA=/nonexistent BATON_MODEL=$model "$tokenizer" 2>&1)
    rc=$?
    [[ $rc -eq 1 ]] || fail "test_tokenizer, BT_TEST_DATA=/nonexistent, model $model: exit $rc, want 1"
    grep -q "BT_TEST_DATA=/nonexistent not found" <<<"$out" ||
        fail "test_tokenizer, BT_TEST_DATA=/nonexistent: no failure naming BT_TEST_DATA"
done
out=$(BT_SHARED_DIR=/nonexistent BATON_MODEL=$no_model "$gguf" 2>&1)
rc=$?
[[ $rc -eq 1 ]] || fail "test_gguf, BT_SHARED_DIR=/nonexistent: exit $rc, want 1"

# 2. The model missing: exit 77 with a SKIP line, and ctest reports the test as skipped.
out=$(BATON_MODEL=$no_model "$gguf" 2>&1)
rc=$?
[[ $rc -eq 77 ]] || fail "test_gguf without the model: exit $rc, want 77"
grep -q "^SKIP .*not found" <<<"$out" || fail "test_gguf without the model: no SKIP line"
grep -q " 0 failed, [1-9][0-9]* skipped$" <<<"$out" || fail "test_gguf without the model: closing line"
# From a scratch directory that includes the build's registration: ctest writes its
# Testing/Temporary logs there, not over the log of the ctest run this test is part of.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/bt_honest.XXXXXX")
echo "include(\"$build/tests/CTestTestfile.cmake\")" >"$scratch/CTestTestfile.cmake"
out=$(BATON_MODEL=$no_model ctest --test-dir "$scratch" -R '^unit\.test_gguf$' 2>&1)
rc=$?
rm -rf "$scratch"
[[ $rc -eq 0 ]] || fail "ctest unit.test_gguf without the model: exit $rc"
grep -q "Skipped" <<<"$out" || fail "ctest does not count unit.test_gguf as skipped: $out"
grep -q "unit.test_gguf .*Passed" <<<"$out" && fail "ctest counts unit.test_gguf as passed"

# 3. Everything there: the test passes (exit 0), when the model is here.
if [[ -r ${BATON_MODEL:-$no_model} ]]; then
    "$gguf" >/dev/null 2>&1
    rc=$?
    [[ $rc -eq 0 ]] || fail "test_gguf with data and model: exit $rc, want 0"
fi
echo "honest_skips: $n_fail failed"
[[ $n_fail -eq 0 ]]
