#!/usr/bin/env bash
# GPU check, prepared for a lent GPU machine (about 5 of its 8 minutes):
# builds the worker and gateway against the machine's CUDA PyTorch (its
# bundled LibTorch 2.x), serves BiT-R50x1 (reference weights) on GPU 0 behind
# a gateway, sends it requests, and compares the answers with the CPU
# engine's. That machine has no package registry: first, here, run
#   deploy/gpu-check.sh --fetch-debs        # apt-get download into deploy/debs/ (git-ignored)
# then there, from the repository root (carry deploy/debs):
#   deploy/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEBS=deploy/debs
PACKAGES=(libpistache-dev libpistache0 cppzmq-dev libzmq3-dev libzmq5 libsodium23 libpgm-5.3-0 libnorm1
          nlohmann-json3-dev libgtest-dev libbsd0 libmd0)

if [[ "${1:-}" == "--fetch-debs" ]]; then
  mkdir -p "$DEBS"
  (cd "$DEBS" && apt-get download "${PACKAGES[@]}")
  exit 0
fi

out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
prefix=/tmp/intgrads-deps
mkdir -p "$prefix"
for deb in "$DEBS"/*.deb; do dpkg -x "$deb" "$prefix"; done
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' \
  | tee "$out/gpu-check.txt"

start=$(date +%s)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DINTGRADS_BUILD_TESTS=OFF \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr;$prefix/usr/lib/x86_64-linux-gnu/cmake;$prefix/usr/share/cmake" \
  -DCMAKE_INCLUDE_PATH="$prefix/usr/include" -DCMAKE_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu" \
  >"$out/cmake.log" 2>&1
cmake --build build-gpu -j"$(nproc)" >"$out/build.log" 2>&1
echo "build: $(( $(date +%s) - start )) s" | tee -a "$out/gpu-check.txt"

work=$(mktemp -d)
python3 tests/python/reference_models.py bit-m-r50x1 "$work/bit.pth"
python3 - "$work" <<'PY'
import json, sys
sys.path.insert(0, "tests/python")
import reference_models as rm
ref = rm.reference("bit-m-r50x1")
json.dump({"img_data": ref["image_uint8_hwc"], "target_class": "cat"}, open(sys.argv[1] + "/req.json", "w"))
PY
build-gpu/bin/intgrads-images attribute -bp "$work/bit.pth" --input "$work/req.json" --output "$work/cpu.gzip" \
  | tee -a "$out/gpu-check.txt"
build-gpu/bin/intgrads-images attribute -bp "$work/bit.pth" --input "$work/req.json" --output "$work/gpu.gzip" --cuda \
  | tee -a "$out/gpu-check.txt"

build-gpu/bin/intgrads-gateway --host 127.0.0.1 --port 18080 --bind-workers tcp://127.0.0.1:15555 &
gateway=$!
build-gpu/bin/intgrads-worker --connect tcp://127.0.0.1:15555 -bp "$work/bit.pth" --cuda --device 0 &
worker=$!
trap 'kill $worker $gateway 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -fs http://127.0.0.1:18080/readyz >/dev/null && break; sleep 0.5; done
for i in 1 2 3 4 5; do
  curl -s -o "$work/service$i.gzip" -w "request $i: %{http_code} in %{time_total} s\n" \
    http://127.0.0.1:18080/model/ --data @"$work/req.json" | tee -a "$out/gpu-check.txt"
done
python3 - "$work" <<'PY' | tee -a "$out/gpu-check.txt"
import gzip, io, sys, torch
load = lambda p: torch.load(io.BytesIO(gzip.open(p).read()), weights_only=True)
cpu, gpu, service = (load(sys.argv[1] + f) for f in ("/cpu.gzip", "/gpu.gzip", "/service5.gzip"))
scale = cpu["integrated_grads"].abs().max().item()
for name, d in (("attribute --cuda", gpu), ("service on cuda:0", service)):
    err = (d["integrated_grads"] - cpu["integrated_grads"]).abs().max().item() / scale
    print(f"{name}: IG vs CPU, max error / max |IG| = {err:.2e}; logits max diff "
          f"{(d['output'] - cpu['output']).abs().max().item():.2e}")
PY
curl -s http://127.0.0.1:18080/v1/workers | tee -a "$out/gpu-check.txt"
echo
