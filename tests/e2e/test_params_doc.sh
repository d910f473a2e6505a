#!/usr/bin/env bash
# docs/api.md's request-parameter table is the one the code defines: the block between the
# params markers equals what build/tests/param_table prints from bt_request_param_table.
source "$(dirname "$0")/lib.sh"
doc="$E2E_DIR/../../docs/api.md"
tool="${BT_BUILD_DIR:-}/tests/param_table"
if [[ ! -x $tool ]]; then
    fail "BT_BUILD_DIR/tests/param_table is not built (BT_BUILD_DIR='${BT_BUILD_DIR:-}')"
elif [[ ! -r $doc ]]; then
    fail "$doc is missing"
else
    want=$("$tool")
    got=$(sed -n '/^<!-- params:begin/,/^<!-- params:end/p' "$doc" | sed '1d;$d')
    if [[ -n $want && $got == "$want" ]]; then
        pass "docs/api.md parameter table matches the code ($(wc -l <<<"$want") lines)"
    else
        fail "docs/api.md parameter table differs from param_table:"
        diff <(echo "$want") <(echo "$got")
    fi
fi
finish
