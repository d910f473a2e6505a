#!/usr/bin/env bash
# setup_venv.sh - the Python virtual environment of the server tests (tests/server/*.py):
# the pinned packages of requirements.txt from PyPI. Idempotent: when the venv exists and was
# made from the same requirements.txt it returns at once. Parallel callers (ctest -j) wait on
# a lock instead of building it twice.
# Usage: tests/server/setup_venv.sh        prints the venv's python on stdout
#   BT_SERVER_VENV   where (default: build/server-venv under the repository root)
# Exit 77 when PyPI cannot be reached (the tests then skip, never pass); 1 on other failures.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${BT_SERVER_VENV:-$here/../../build/server-venv}
req=$here/requirements.txt
mkdir -p "$(dirname "$venv")"
stamp_want=$(sha256sum "$req" | cut -d' ' -f1)

exec 9>"$venv.lock"
flock 9
if [[ -x $venv/bin/python && $(cat "$venv/.stamp" 2>/dev/null) == "$stamp_want" ]]; then
    echo "$venv/bin/python"
    exit 0
fi
rm -rf "$venv"
if ! python3 -m venv "$venv" >&2; then
    echo "setup_venv: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
    exit 1
fi
if ! "$venv/bin/pip" install -q --disable-pip-version-check --no-input -r "$req" >&2; then
    rm -rf "$venv"
    # Told apart: no network (skip) or a real install failure (fail).
    if ! python3 -c 'import urllib.request; urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=15)' 2>/dev/null; then
        echo "setup_venv: PyPI cannot be reached; the server tests are skipped" >&2
        exit 77
    fi
    echo "setup_venv: pip install -r $req failed with PyPI reachable" >&2
    exit 1
fi
echo "$stamp_want" >"$venv/.stamp"
echo "$venv/bin/python"
