#!/usr/bin/env bash
# GPU check, prepared for a lent GPU machine (about 4 of its 8 minutes):
# builds the worker and gateway against the machine's CUDA PyTorch (its
# bundled LibTorch 2.x), serves BiT-R50x1 (reference weights) on GPU 0 behind
# a gateway, sends it requests, and compares the answers with the CPU
# engine's. That machine has no package registry: first, here, run
#   deploy/gpu-check.sh --fetch-debs    # apt-get download into deploy/debs/ (git-ignored)
# then there, from the repository root (carry deploy/debs; the reference
# vectors of ../shared/spec/reference must be there too):
#   deploy/gpu-check.sh                 # or --build-only (benchmarks/gpu.sh uses it)
# Output goes to $OUT (default /tmp/gpu-check): gpu-check.txt, cmake.log, build.log.
set -euo pipefail
cd "$(dirname "$0")/.."
DEBS=deploy/debs
PACKAGES=(libpistache-dev libpistache0 cppzmq-dev libzmq3-dev libzmq5 libsodium23 libpgm-5.3-0 libnorm1
          nlohmann-json3-dev libbsd0 libmd0 libpng-dev libpng16-16 libjpeg-dev libjpeg62-turbo-dev
          libjpeg62-turbo zlib1g-dev)

if [[ "${1:-}" == "--fetch-debs" ]]; then
  mkdir -p "$DEBS"
  (cd "$DEBS" && apt-get download "${PACKAGES[@]}")
  exit 0
fi

out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
prefix=/tmp/intgrads-deps
if [[ ! -d $prefix/usr ]]; then
  mkdir -p "$prefix"
  for deb in "$DEBS"/*.deb; do dpkg -x "$deb" "$prefix"; done
fi
# The machine's own zlib, libpng and libjpeg come first where it has them.
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$prefix/usr/lib/x86_64-linux-gnu"
if [[ ! -x build-gpu/bin/intgrads-worker ]]; then
  torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' \
    | tee "$out/gpu-check.txt"
  start=$(date +%s)
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DINTGRADS_BUILD_TESTS=OFF \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr;$prefix/usr/lib/x86_64-linux-gnu/cmake;$prefix/usr/share/cmake" \
    -DCMAKE_SYSTEM_INCLUDE_PATH="$prefix/usr/include" -DCMAKE_SYSTEM_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu" \
    >"$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
  cmake --build build-gpu -j"$(nproc)" >"$out/build.log" 2>&1 || { grep -B2 -A12 -m3 'error' "$out/build.log"; exit 1; }
  echo "build: $(( $(date +%s) - start )) s, $(grep -c 'warning:' "$out/build.log" || true) warnings" \
    | tee -a "$out/gpu-check.txt"
fi
[[ "${1:-}" == "--build-only" ]] && exit 0

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

build-gpu/bin/intgrads-gateway --host 127.0.0.1 --port 18080 --bind-workers "ipc://$work/workers" &
gateway=$!
build-gpu/bin/intgrads-worker --connect "ipc://$work/workers" -bp "$work/bit.pth" --cuda --device 0 &
worker=$!
trap 'kill $worker $gateway 2>/dev/null || true' EXIT
# The requests go through Python's urllib: the machine may have no curl.
python3 - "$work" <<'PY' | tee -a "$out/gpu-check.txt"
import json, sys, time, urllib.request
work, url = sys.argv[1], "http://127.0.0.1:18080"
for _ in range(240):
    try:
        if urllib.request.urlopen(url + "/readyz", timeout=2).status == 200:
            break
    except OSError:
        time.sleep(0.5)
body = open(work + "/req.json", "rb").read()
for i in range(1, 6):
    started = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url + "/model/", data=body), timeout=120) as r:
        open(f"{work}/service{i}.gzip", "wb").write(r.read())
        print(f"request {i}: {r.status} in {time.perf_counter() - started:.3f} s "
              f"(worker {float(r.headers['X-Compute-Seconds']):.3f} s)")
print(json.dumps(json.load(urllib.request.urlopen(url + "/v1/workers")), separators=(",", ":")))
PY
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
