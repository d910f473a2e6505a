#!/usr/bin/env bash
# run.sh TEST.py [ARGS...] - runs one server test (ctest's command) with the venv's python.
# The venv is made on first use (setup_venv.sh); without PyPI the test is skipped (77).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=$("$here/setup_venv.sh")
rc=$?
if [[ $rc -ne 0 ]]; then
    [[ $rc -eq 77 ]] && echo "SKIP: no venv for the server tests (PyPI unreachable)"
    exit "$rc"
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -u "$@"
