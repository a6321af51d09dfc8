#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running demo: installs the
# dependencies (apt), builds everything into build/, and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
ninja -C build
build/bin/restore_demo "$@"
