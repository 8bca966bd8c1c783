#!/usr/bin/env bash
# GPU benchmarks, prepared for a lent GPU machine (about 4 of its 8 minutes,
# after deploy/gpu-check.sh, whose build it reuses or makes): the engine alone
# on GPU 0 for the reference configurations at n_steps=50 (IEEE float32, then
# TensorFloat-32), the chunk size's
# effect on LaNet-128/24 (by hand and from a memory budget), the same engine on the machine's CPUs for scale, and
# the service's throughput with 1, 2 and 4 workers sharing GPU 0, and one
# worker batching the requests queued at it.
#   benchmarks/gpu.sh        # output in $OUT (default /tmp/gpu-bench): gpu-bench.txt
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-bench}
mkdir -p "$out"
deploy/gpu-check.sh --build-only
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/tmp/intgrads-deps/usr/lib/x86_64-linux-gnu"
log="$out/gpu-bench.txt"
bench=build-gpu/bin/intgrads-bench-engine
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  echo "## engine on cuda:0, n_steps 50, all path points in one batch"
  $bench --cuda --repeats 10 bit-m-r50x1 lanet-c16-l8 bit-s-r101x3 lanet-c128-l24
  echo "## the same with TensorFloat-32 allowed (--tf32)"
  $bench --cuda --tf32 --repeats 10 bit-m-r50x1 lanet-c16-l8 bit-s-r101x3 lanet-c128-l24
  echo "## the same in bfloat16 (--bf16), with its error against float32"
  $bench --cuda --bf16 --repeats 10 default bit-m-r50x1 bit-s-r101x3 lanet-c128-l24
  echo "## the scan schedule (method scan), its forward-only scan included"
  $bench --cuda --method scan --repeats 10 default bit-m-r50x1
  echo "## LaNet-128/24 on cuda:0 in chunks of 10 and 25 path points"
  $bench --cuda --repeats 5 --chunk-size 10 lanet-c128-l24
  $bench --cuda --repeats 5 --chunk-size 25 lanet-c128-l24 | tail -1
  echo "## LaNet-128/24 on cuda:0 with a 4 GB budget (the batch size follows from it)"
  $bench --cuda --repeats 5 --memory-budget-mb 4096 lanet-c128-l24 | tail -1
  echo "## n_steps 300 on cuda:0"
  $bench --cuda --repeats 3 --n-steps 300 bit-m-r50x1 lanet-c128-l24
  echo "## engine on the CPU, $(nproc) threads"
  $bench --threads "$(nproc)" --repeats 3 bit-m-r50x1 lanet-c16-l8
  echo "## service: 1, 2 and 4 workers on cuda:0, BiT-R50x1, n_steps 50, 8 concurrent clients"
  INTGRADS_BIN=build-gpu/bin python3 benchmarks/throughput.py --cuda --model bit-m-r50x1 --n-steps 50 \
    --requests 64 --concurrency 8
  echo "## batching inside one worker on cuda:0 (none, 8 requests, 8 with a 20 ms window), 16 concurrent clients"
  INTGRADS_BIN=build-gpu/bin python3 benchmarks/throughput.py --cuda --model bit-m-r50x1 --n-steps 50 \
    --workers 1 --batch 1,8,8:20 --requests 64 --concurrency 16 --overhead-samples 5
} 2>&1 | tee "$log"
