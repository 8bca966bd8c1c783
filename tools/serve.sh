#!/usr/bin/env bash
# The README's first command: installs, builds and starts the service
# (gateway and a local worker). Arguments go to intgrads-images.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh
# On the PATH as the original README types them: intgrads-images, intgrads.
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
$sudo cmake --install build >/dev/null
exec intgrads-images "$@"
