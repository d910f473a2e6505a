#!/usr/bin/env bash
# tokenizer_layers.sh - the tokenizer's files call one way (coordinator/tokenizer/vocab_map.h):
# vocab_map <- bpe, spm <- vocab <- detok, chat. Reads the symbols of libbt_tokenizer.a: a
# member may only call functions defined by members of a lower level (or outside the library),
# so no file calls back into a file that calls it. Also checks the includes that encode the
# same order. Usage: tokenizer_layers.sh LIBBT_TOKENIZER.a SOURCE_DIR (from ctest).
set -uo pipefail
lib=$1 src=$2
n_fail=0
fail() { echo "FAIL $*"; n_fail=$((n_fail + 1)); }
declare -A level=([vocab_map]=0 [bpe]=1 [spm]=1 [vocab]=2 [detok]=3 [chat]=3)

declare -A def_by # symbol -> member (without .c.o)
while read -r member sym; do def_by[$sym]=$member; done < <(
    nm -A --defined-only "$lib" 2>/dev/null |
        awk '$2 ~ /^[TDBR]$/ {split($1, p, ":"); m = p[2]; sub(/\.c\.o$/, "", m); print m, $3}')
[[ ${#def_by[@]} -gt 0 ]] || { echo "FAIL no symbols read from $lib"; exit 1; }
members=$(printf '%s\n' "${def_by[@]}" | sort -u)
for m in $members; do
    [[ -n ${level[$m]+x} ]] || fail "member $m has no level in this script: add it"
done
n_calls=0
while read -r member sym; do
    callee=${def_by[$sym]:-}
    [[ -z $callee || $callee == "$member" ]] && continue
    n_calls=$((n_calls + 1))
    if ((${level[$callee]} >= ${level[$member]})); then
        fail "$member.c calls $sym of $callee.c (level ${level[$callee]} >= ${level[$member]})"
    fi
done < <(nm -A --undefined-only "$lib" 2>/dev/null |
    awk '{split($1, p, ":"); m = p[2]; sub(/\.c\.o$/, "", m); print m, $NF}')
((n_calls >= 5)) || fail "only $n_calls calls between members: the check saw nothing"

# Includes: the lower levels never include a header of a higher one.
for f in vocab_map.h vocab_map.c token.h; do
    grep -nE '#include "(vocab|bpe|spm|detok|chat)\.h"' "$src/$f" && fail "$f includes upward"
done
for f in bpe.h bpe.c spm.h spm.c; do
    grep -nE '#include "(vocab|detok|chat)\.h"' "$src/$f" && fail "$f includes upward"
done
[[ -e $src/tokenizer.h ]] && fail "tokenizer.h (the shared header of the old circle) is back"

if ((n_fail)); then echo "$n_fail failed"; exit 1; fi
echo "tokenizer layers: $n_calls calls between files, all downward"
