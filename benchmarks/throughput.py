#!/usr/bin/env python3
"""Throughput of one gateway in front of 1, 2 and 4 workers (1 thread each)
under a fixed concurrent load, and the gateway's own overhead per request.

    /usr/bin/python3 benchmarks/throughput.py [--model lanet-c16-l8 | --model default] [--n-steps 16]
        [--requests 48] [--concurrency 8] [--workers 1,2,4] [--batch 1,8,8:50] [--cuda] [--json]

With --cuda every worker computes on GPU 0 (benchmarks/gpu.sh), and the GPU's
utilization is sampled with nvidia-smi during each load. --batch runs each
worker count once per batching setting: N (intgrads-worker --batch-requests
N) or N:MS (and --batch-window-ms MS); 1 is no batching. Each load prints
attributions per second, p50 and p99 latency, and the median of each stage
of the answers' Server-Timing.

Everything runs on 127.0.0.1. The overhead is measured on an idle service,
one request at a time, twice: the client's latency minus the worker's own
time on the request (X-Compute-Seconds: preprocessing, the attribution,
torch.save and gzip), which also counts the client's HTTP stack; and the
gateway's own share from its Server-Timing header (from the start of the
HTTP handler to the answer's hand-over to Pistache, less the worker's time:
JSON parsing and validation, the two ZeroMQ hops and the worker's queueing)."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))

import reference_models as rm  # noqa: E402
from service import (BIN, Gateway, http, server_timing, start_worker, stop, wait_until,  # noqa: E402
                     worker_key_flags)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class GpuSampler:
    """nvidia-smi's GPU utilization every 200 ms while a block runs (none without nvidia-smi)."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.samples = []

    def __enter__(self):
        if self.enabled:
            self.process = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                             "-i", "0", "-lms", "200"], stdout=subprocess.PIPE, text=True)
            self.thread = threading.Thread(target=self._read)
            self.thread.start()
        return self

    def _read(self):
        for line in self.process.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line.strip()))

    def __exit__(self, *exc):
        if self.enabled:
            self.process.terminate()
            self.thread.join()

    def summary(self):
        if not self.samples:
            return {}
        return {"gpu_util_mean": statistics.mean(self.samples), "gpu_util_max": max(self.samples)}


def run_load(url, body, requests, concurrency, sample_gpu=False):
    latencies, failures, stages = [], [], []
    lock = threading.Lock()
    counter = iter(range(requests))

    def client():
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            started = time.perf_counter()
            status, headers, _ = http("POST", url + "/model/", body, timeout=600)
            elapsed = time.perf_counter() - started
            with lock:
                (latencies if status == 200 else failures).append(elapsed)
                if status == 200:
                    stages.append(server_timing(headers["Server-Timing"]))

    with GpuSampler(sample_gpu) as gpu:
        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
    run = {"requests": requests, "failed": len(failures), "seconds": wall, "rps": len(latencies) / wall,
           "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99),
           "stages_ms_median": {name: statistics.median(s[name] for s in stages) for name in stages[0]}
           if stages else {}}
    run.update(gpu.summary())
    return run


def measure_overhead(url, body, samples):
    overheads, computes, gateway = [], [], []
    for _ in range(samples):
        started = time.perf_counter()
        status, headers, _ = http("POST", url + "/model/", body, timeout=600)
        elapsed = time.perf_counter() - started
        assert status == 200, status
        compute = float(headers["X-Compute-Seconds"])
        overheads.append(elapsed - compute)
        computes.append(compute)
        gateway.append(server_timing(headers["Server-Timing"])["gateway"] / 1000)
    return {"overhead_ms_median": 1000 * statistics.median(overheads),
            "overhead_ms_p90": 1000 * percentile(overheads, 90),
            "gateway_ms_median": 1000 * statistics.median(gateway),
            "gateway_ms_p90": 1000 * percentile(gateway, 90),
            "compute_ms_median": 1000 * statistics.median(computes),
            "overhead_share": statistics.median(overheads) / statistics.median(computes)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lanet-c16-l8",
                        help="a reference configuration (shared/spec/reference), or 'default' for the embedded model")
    parser.add_argument("--n-steps", type=int, default=16)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--overhead-samples", type=int, default=20)
    parser.add_argument("--batch", default="1",
                        help="batching settings to run, comma-separated: N or N:MS (--batch-requests N "
                             "--batch-window-ms MS); 1: none")
    parser.add_argument("--cuda", action="store_true", help="workers compute on GPU 0 (GPU utilization sampled)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    results = {"model": args.model, "n_steps": args.n_steps, "concurrency": args.concurrency,
               "cpus": os.cpu_count(), "device": "cuda:0" if args.cuda else "cpu", "runs": []}
    extra = ("--cuda",) if args.cuda else ()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "default":  # the embedded model, on an image drawn here
            pixels = [[[(x * 8 + y) % 256, (y * 8) % 256, (x * y) % 256] for x in range(32)] for y in range(32)]

            def launch(endpoint, *batching):
                return subprocess.Popen([os.path.join(BIN, "intgrads-worker"), "--connect", endpoint, "--cpu",
                                         "--threads", "1", "--heartbeat-ms", "1000", *worker_key_flags(), *extra,
                                         *batching])
        else:
            ref = rm.reference(args.model)
            if ref is None:
                sys.exit(f"reference {args.model} not found under {rm.REFERENCE_DIR}")
            pixels = ref["image_uint8_hwc"]
            checkpoint = os.path.join(tmp, "model.pth")
            rm.write_checkpoint(ref, checkpoint)

            def launch(endpoint, *batching):
                return start_worker(endpoint, ref["family"], checkpoint, *extra, *batching, heartbeat_ms=1000)
        body = json.dumps({"img_data": pixels, "target_class": "cat", "n_steps": args.n_steps}).encode()
        settings = [(int(b.split(":")[0]), int(b.split(":")[1]) if ":" in b else 0) for b in args.batch.split(",")]
        for count in [int(n) for n in args.workers.split(",")]:
            for batch, window in settings:
                gateway = Gateway(heartbeat_ms=1000)
                batching = ("--batch-requests", str(batch), "--batch-window-ms", str(window)) if batch > 1 else ()
                workers = [launch(gateway.endpoint, *batching) for _ in range(count)]
                try:
                    wait_until(lambda: len(gateway.workers()) == count, what=f"{count} workers")
                    http("POST", gateway.url + "/model/", body)  # warm-up
                    run = {"workers": count, "batch": batch, "window_ms": window}
                    if count == 1 and batch == 1:
                        run.update(measure_overhead(gateway.url, body, args.overhead_samples))
                    run.update(run_load(gateway.url, body, args.requests, args.concurrency, sample_gpu=args.cuda))
                    results["runs"].append(run)
                finally:
                    for w in workers:
                        stop(w)
                    gateway.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"model {args.model}, n_steps {args.n_steps}, concurrency {args.concurrency}, {os.cpu_count()} CPUs, "
          f"1 thread per worker, workers on {results['device']}")
    print("| workers | batch (window ms) | requests | failed | attributions/s | p50 ms | p99 ms | GPU % mean / max |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results["runs"]:
        batching = "none" if r["batch"] == 1 else f"{r['batch']} ({r['window_ms']})"
        gpu = f"{r['gpu_util_mean']:.0f} / {r['gpu_util_max']}" if "gpu_util_mean" in r else "-"
        print(f"| {r['workers']} | {batching} | {r['requests']} | {r['failed']} | {r['rps']:.2f} | "
              f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {gpu} |")
    print("stages under load, median ms (Server-Timing):")
    for r in results["runs"]:
        batching = "none" if r["batch"] == 1 else f"{r['batch']} ({r['window_ms']})"
        print(f"  {r['workers']} worker(s), batch {batching}: " +
              ", ".join(f"{name} {ms:.1f}" for name, ms in r["stages_ms_median"].items()))
    one = results["runs"][0]
    if "overhead_ms_median" in one:
        print(f"overhead per request (idle, 1 worker), client latency minus the worker's time: median "
              f"{one['overhead_ms_median']:.2f} ms, p90 {one['overhead_ms_p90']:.2f} ms; "
              f"{100 * one['overhead_share']:.2f}% of the worker's {one['compute_ms_median']:.0f} ms")
        print(f"  of which inside the gateway (Server-Timing: handler start to answer, less the worker's time): "
              f"median {one['gateway_ms_median']:.2f} ms, p90 {one['gateway_ms_p90']:.2f} ms")


if __name__ == "__main__":
    main()
