#!/usr/bin/env bash
# Installs the Debian packages intgrads-images builds and tests with.
# Used by the README's set-up commands, .ci/run and the Dockerfiles.
set -euo pipefail
packages=(
  build-essential cmake git ca-certificates curl
  libtorch-dev libpistache-dev cppzmq-dev libzmq3-dev nlohmann-json3-dev
  zlib1g-dev libpng-dev libjpeg-dev libgtest-dev
  python3-torch python3-numpy python3-pil python3-yaml python-is-python3 iproute2
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
