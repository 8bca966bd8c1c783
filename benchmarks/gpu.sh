#!/usr/bin/env bash
# GPU benchmarks for a lent GPU machine, in under 8 minutes with the build:
# BiT-M-R50x1 and BiT-S-R101x3 at n_steps 50 in IEEE float32,
#  - the engine alone on GPU 0, batches of 1, 4, 8 and 16 requests (the
#    requests' path points sharing passes, as a batching worker runs them):
#    attributions per second;
#  - through the service, 1 and 2 workers on GPU 0, each batching 1, 4, 8 and
#    16 requests: attributions per second, p50 and p99 latency, GPU
#    utilization sampled by nvidia-smi, each stage's median (Server-Timing);
#  - the FLOPs counted per attribution, to set the rates against the GPU's
#    float32 peak (docs/PERFORMANCE.md).
#   benchmarks/gpu.sh            # there: builds build-gpu/ (deploy/gpu-check.sh --build-only); output in $OUT
#   benchmarks/gpu.sh --dry-run  # here, on the CPU build (build/bin), small: checks the script end to end
set -euo pipefail
cd "$(dirname "$0")/.."
dry=0
[[ "${1:-}" == "--dry-run" ]] && dry=1
out=${OUT:-/tmp/gpu-bench}
mkdir -p "$out"
log="$out/gpu-bench.txt"
python=${PYTHON:-python3}
if ((dry)); then
  bin=build/bin device=() cuda_flag=() steps=4 requests=8 repeats=2 python=${PYTHON:-/usr/bin/python3}
else
  deploy/gpu-check.sh --build-only
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/tmp/intgrads-deps/usr/lib/x86_64-linux-gnu"
  bin=build-gpu/bin device=(--cuda) cuda_flag=(--cuda) steps=50 requests=64 repeats=10
fi
bench=$bin/intgrads-bench-engine
{
  date -u
  if ((dry)); then echo "dry run on the CPU"; else nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; fi
  for model in bit-m-r50x1 bit-s-r101x3; do
    echo "## engine, $model, n_steps $steps, batches of 1, 4, 8 and 16 requests"
    for jobs in 1 4 8 16; do
      $bench "${device[@]}" --n-steps "$steps" --repeats "$repeats" --jobs "$jobs" $model | tail -1
    done
    $python benchmarks/baselines.py $model --flops-only --n-steps "$steps"
  done
  for model in bit-m-r50x1 bit-s-r101x3; do
    echo "## service, $model, n_steps $steps: 1 and 2 workers on one device, batching 1, 4, 8, 16 requests"
    INTGRADS_BIN=$bin $python benchmarks/throughput.py "${cuda_flag[@]}" --model $model --n-steps "$steps" \
      --workers 1,2 --batch 1,4,8,16 --requests "$requests" --concurrency 32 --overhead-samples 3
  done
} 2>&1 | tee "$log"
