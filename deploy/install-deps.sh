#!/usr/bin/env bash
# Install the Debian 12 packages baton needs to build, test and fetch its model (python3-venv
# and chromium: the server tests' venv and the chat page test, tests/server/; slurm-wlm and
# munge: the single-node Slurm of deploy/slurm/ci-cluster.sh that tests/slurm/ runs jobs on;
# iproute2 and procps: ip, tc and pgrep of the multi-host test bed deploy/netns/ and its test).
# Idempotent: when every package is already installed, apt is not touched at all.
# Usage: deploy/install-deps.sh            (as root, or with sudo available)
set -euo pipefail

PACKAGES=(
    build-essential cmake pkg-config
    libopenmpi-dev openmpi-bin
    libprotobuf-c-dev protobuf-c-compiler
    libzstd-dev libpcre2-dev libmicrohttpd-dev libjansson-dev
    clang libclang-rt-14-dev
    unzip python3 python3-pip curl time
    python3-venv chromium
    slurm-wlm munge
    iproute2 procps
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all ${#PACKAGES[@]} packages already installed"
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "install-deps: need root or sudo to install: ${missing[*]}" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
