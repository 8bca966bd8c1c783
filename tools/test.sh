#!/usr/bin/env bash
# The README's second command: installs, builds and runs the default tests
# (everything but the `slow` and `docker` labels; run those with
# ctest --test-dir build -L slow, or -L docker).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh --web
tools/build.sh
ctest --test-dir build -LE "slow|docker" --output-on-failure -j2 --timeout 900
