#!/usr/bin/env bash
# Installs the Debian packages intgrads-images builds and tests with.
# Used by the README's set-up commands, .ci/run and the Dockerfiles.
#   --web    also Chromium, Node.js and npm, and Playwright (playwright-core,
#            pinned in tests/web/package-lock.json, without its own browsers),
#            for the web page's test (tests/python/test_web.py), and the OpenAPI
#            validator (@seriousme/openapi-schema-validator) for openapi.json's test
#   --build  only what building the programs needs, no test packages (the
#            Dockerfile's build stage); --build --no-torch without libtorch-dev
#            (a CUDA LibTorch comes from elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
web=0 tests=1 torch=1
for flag in "$@"; do
  case "$flag" in
    --web) web=1 ;;
    --build) tests=0 ;;
    --no-torch) torch=0 ;;
    *) echo "install-deps.sh: unknown flag $flag" >&2; exit 2 ;;
  esac
done
packages=(
  build-essential cmake ca-certificates
  libpistache-dev cppzmq-dev libzmq3-dev nlohmann-json3-dev zlib1g-dev libpng-dev libjpeg-dev
  # the explain command's HTTP(S) client
  libcurl4-openssl-dev
  # the allocator of the programs that run the passes (CMake's INTGRADS_TCMALLOC)
  # and of the Python baselines in benchmarks/compare.py
  libtcmalloc-minimal4
)
((torch)) && packages+=(libtorch-dev)
((tests)) && packages+=(git curl libgtest-dev python3-torch python3-numpy python3-pil python3-yaml python3-zmq
                        python3-venv python3-pip python3-setuptools python3-matplotlib python-is-python3 iproute2)
if ((web)); then
  packages+=(chromium)
  # Node.js may come from elsewhere (NodeSource's bundles npm): only install Debian's when none is there.
  command -v npm >/dev/null || packages+=(nodejs npm)
fi
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
if ((web)) && [[ ! -d tests/web/node_modules/playwright-core || ! -d tests/web/node_modules/@seriousme/openapi-schema-validator ]]; then
  (cd tests/web && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi
