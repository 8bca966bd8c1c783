#!/usr/bin/env python3
"""Our service and engine next to the original method and Captum's IG: the
performance issue's table in one command.

    /usr/bin/python3 benchmarks/compare.py [--quick] [--json] [--threads 2] [--n-steps 50]
                     [--repeats 3] [--models NAME ...] [--settle 30]
                     [--baseline-malloc tcmalloc|glibc] [--render RESULT.json]

For each model (default: default, bit-m-r50x1, lanet-c16-l8, bit-s-r101x3,
lanet-c128-l24; --quick: default and bit-m-r50x1 with fewer repeats, under 2
minutes), on this machine with the same threads everywhere:

- original, captum: the Python baselines of benchmarks/baselines.py (our own
  rendering of the networks in Debian's python3-torch, checked against the
  reference logits; the original method's two passes and Captum's IG alone),
  each in a process of its own, with its peak resident memory; on tcmalloc
  (libtcmalloc-minimal4, LD_PRELOAD; --baseline-malloc glibc for the C
  library's), which keeps freed memory for reuse where glibc's malloc returns
  every batch-sized tensor to the kernel and faults the next one in again:
  on this project's VM that made the baselines up to 2.5x slower
  (docs/PERFORMANCE.md, "What was tried"). Our worker is linked
  with tcmalloc where the build found it;
- service: one POST /model/ at a time to an idle gateway with one worker
  (intgrads-gateway and intgrads-worker on 127.0.0.1, the worker's default
  memory budget), the client's latency, median of `repeats` after a warm-up;
  the worker's peak resident memory (VmHWM); its IG checked against the
  Captum baseline's (within 1e-3 of the largest |IG|; as the tests, 3e-3
  for BiT-R101x3 and 1.5e-2 for LaNet-C16-L8, which float32 rounding moves
  that much: docs/TESTING.md; LaNet-128/24's activations grow without bound
  under the deterministic weights, so its IG is only timed);
- engine: build/bin/intgrads-bench-engine, the attribution alone, median;
- BiT-R101x3 and LaNet-128/24: a pause (--settle, 30 s) before each of the
  four, so that none runs while the machine is still taking back the
  previous one's memory (the baselines peak at 5 and 18 GB; right after an
  18 GB process LaNet-128/24's attribution ran up to 9% slower);
- the machine's float32 dense-matrix rate (a 2048^3 product as torch.mm and
  as a 1 x 1 convolution, best of 5 each; the faster is the base) and the
  engine's rate: counted FLOPs of n_steps forward and input-gradient passes
  (convolutions and linear layers; the backward pass counted as the forward)
  divided by the engine's time;
- the CPU's multiply-add peak (`intgrads-bench-engine --fma-peak`: chains
  of multiply-adds in registers, the same threads) and the ceiling it sets:
  the original's time over the counted FLOPs' time at that peak, what "vs
  original" would be if every FLOP ran at the peak and nothing else took
  any time;
- where the service's time goes: Server-Timing's gateway share and the
  worker's prepare, encode and gzip, plus what the client sees beyond the
  gateway (HTTP and loopback), as shares of the request.

A benchmark: it prints numbers and refuses only results that differ (a
baseline whose network is not the reference one, or IG that disagree)."""

import argparse
import gzip
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))

import baselines  # noqa: E402
import reference_models as rm  # noqa: E402
from service import BIN, Gateway, http, server_timing, stop  # noqa: E402

ALL = ["default", "bit-m-r50x1", "lanet-c16-l8", "bit-s-r101x3", "lanet-c128-l24"]
QUICK = ["default", "bit-m-r50x1"]
LARGE = {"bit-s-r101x3", "lanet-c128-l24"}  # slow: one timed run after the warm-up
# Of the largest |IG|, as the tests hold them (docs/TESTING.md): the LaNet reference networks' IG is tiny
# (f(x) - f(baseline) = -0.001) and float32 rounding moves it by ~1%; BiT-R101x3's integrand is a spike near
# a = 0 that moves by 5.7e-3 between batch sizes; the default model and BiT-R50x1 agree to 1e-3.
# LaNet-128/24's activations grow without bound under the deterministic weights (its reference gives no
# logits): its IG is not compared, only timed.
IG_TOLERANCE = {"lanet-c16-l8": 1.5e-2, "lanet-c128-l24": None, "bit-s-r101x3": 3e-3}


def dense_rates(threads):
    """FLOP/s of a 2048 x 2048 x 2048 float32 product two ways, best of 5:
    torch.mm (the BLAS the torch build links; Debian's is the generic one)
    and the same product as a 1 x 1 convolution over a 32 x 64 image (oneDNN,
    which our passes use)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x, w = torch.randn(1, 2048, 32, 64), torch.randn(2048, 2048, 1, 1)
    rates = {}
    for name, f in (("torch.mm", lambda: torch.mm(a, b)),
                    ("conv 1x1", lambda: torch.nn.functional.conv2d(x, w))):
        f()
        rates[name] = 2 * 2048 ** 3 / min(timed(f) for _ in range(5))
    return rates


def bench_engine(threads, *flags):
    """intgrads-bench-engine with these flags on `threads` threads, its output captured."""
    return subprocess.run([os.path.join(BIN, "intgrads-bench-engine"), "--threads", str(threads), *flags],
                          capture_output=True, text=True)


def fma_peak(threads):
    """FLOP/s of intgrads-bench-engine --fma-peak, or None where it cannot measure this CPU."""
    done = bench_engine(threads, "--fma-peak")
    if done.returncode != 0:
        return None
    return float(done.stdout.split(":")[-1].split()[0]) * 1e9


def timed(f):
    started = time.perf_counter()
    f()
    return time.perf_counter() - started


TCMALLOC = "libtcmalloc_minimal.so.4"  # Debian's libtcmalloc-minimal4


def baseline(name, method, args, repeats, ig_path=None):
    command = [sys.executable, os.path.join(HERE, "baselines.py"), name, "--method", method, "--json", "--n-steps",
               str(args.n_steps), "--threads", str(args.threads), "--repeats", str(repeats)]
    if ig_path:
        command += ["--save-ig", ig_path]
    env = dict(os.environ)
    if args.baseline_malloc == "tcmalloc":
        env["LD_PRELOAD"] = " ".join(filter(None, [env.get("LD_PRELOAD"), TCMALLOC]))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"baselines.py {name} {method}: {done.stderr.strip()[-500:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    if row["malloc"] != args.baseline_malloc:
        raise SystemExit(f"baselines.py {name} {method} ran on {row['malloc']}'s malloc, not "
                         f"{args.baseline_malloc} (is libtcmalloc-minimal4 installed?)")
    return row


def engine(name, args, repeats):
    done = bench_engine(args.threads, "--n-steps", str(args.n_steps), "--repeats", str(repeats), name)
    if done.returncode != 0:
        raise SystemExit(f"intgrads-bench-engine {name}: {done.stderr.strip()[-500:]}")
    cells = [c.strip() for c in done.stdout.strip().splitlines()[-1].strip("|").split("|")]
    return {"mb_per_point": float(cells[5]), "batch": int(cells[6]), "seconds": float(cells[10])}


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def service(name, args, repeats, checkpoint_dir):
    ref = baselines.reference(name)
    flags = []
    if name != "default":
        path = os.path.join(checkpoint_dir, name + ".pth")
        rm.write_checkpoint(ref, path)
        flags = ["-bp" if ref["family"] == "bit" else "-lp", path]
    body = json.dumps({"img_data": ref["image_uint8_hwc"], "target_class": "cat",
                       "n_steps": args.n_steps}).encode()
    gateway = Gateway()
    worker = gateway.start_worker(*flags, threads=args.threads, quiet=True)
    try:
        # A large model's worker loads and checks hundreds of MB; on a machine still returning the
        # baselines' 18 GB it once took longer than the default minute.
        gateway.wait_ready(timeout=300.0 if name in LARGE else 60.0)
        rows = []
        for i in range(repeats + 1):
            started = time.perf_counter()
            status, headers, payload = http("POST", gateway.url + "/model/", body,
                                            {"Content-Type": "application/json"}, timeout=600)
            seconds = time.perf_counter() - started
            if status != 200:
                raise SystemExit(f"service {name}: {status} {payload[:200]}")
            timing = {k: ms / 1000.0 for k, ms in server_timing(headers["Server-Timing"]).items()}
            if i > 0:
                rows.append(dict(timing, client=seconds))
        ig = torch.load(io.BytesIO(gzip.decompress(payload)))["integrated_grads"].numpy()
        result = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        result["peak_rss_mb"] = peak_rss_mb(worker.pid)
        return result, ig
    finally:
        stop(worker)
        gateway.stop()


def measure(name, args):
    repeats = 1 if name in LARGE else args.repeats

    def settle():
        if name in LARGE:
            time.sleep(args.settle)

    with tempfile.TemporaryDirectory() as tmp:
        ig_path = os.path.join(tmp, "captum.npy")
        settle()
        captum = baseline(name, "captum", args, repeats, ig_path)
        captum_ig = np.load(ig_path)
        settle()
        original = baseline(name, "original", args, repeats)
        settle()
        ours, ig = service(name, args, repeats, tmp)
    error = float(np.abs(ig - captum_ig).max())
    tolerance = IG_TOLERANCE.get(name, 1e-3)
    if tolerance is not None and error > tolerance * float(np.abs(captum_ig).max()):
        raise SystemExit(f"{name}: the service's IG differs from the Captum baseline's by {error:.3g}")
    settle()
    bench = engine(name, args, max(repeats, 2))
    pass_flops = 2 * captum["forward_flops_per_image"] * args.n_steps  # n_steps forward + input-gradient passes
    return {
        "model": name, "n_steps": args.n_steps, "threads": args.threads,
        "original_s": original["seconds"], "captum_s": captum["seconds"],
        "service_s": ours["client"], "engine_s": bench["seconds"],
        "speedup_vs_original": original["seconds"] / ours["client"],
        "speedup_vs_captum": captum["seconds"] / ours["client"],
        "engine_gflops": pass_flops / bench["seconds"] / 1e9,
        "pass_gflop": pass_flops / 1e9,
        "peak_mb": {"original": original["peak_rss_mb"], "captum": captum["peak_rss_mb"],
                    "worker": ours["peak_rss_mb"]},
        "mb_per_point": bench["mb_per_point"], "batch": bench["batch"],
        "ig_max_error_vs_captum": error,
        "service_parts_s": {k: ours[k] for k in ("gateway", "prepare", "attribute", "encode", "gzip", "compute")},
        "outside_gateway_s": ours["client"] - ours["gateway"] - ours["compute"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds of rest before each part of BiT-R101x3 and LaNet-128/24 (default 30)")
    parser.add_argument("--baseline-malloc", choices=["tcmalloc", "glibc"], default="tcmalloc",
                        help="the Python baselines' allocator (default tcmalloc, their faster one)")
    parser.add_argument("--render", metavar="JSON", help="print the tables of an earlier --json run, measure nothing")
    args = parser.parse_args()
    if args.render:
        with open(args.render) as f:
            print(render(json.load(f)))
        return
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    models = args.models or (QUICK if args.quick else ALL)
    rates = dense_rates(args.threads)
    peak = fma_peak(args.threads)
    rows = []
    for name in models:
        row = measure(name, args)
        rows.append(row)
        # As each model is done: a long run shows its results before the tables at the end.
        print(f"measured {name}: {row['speedup_vs_original']:.2f}x the original, {row['speedup_vs_captum']:.2f}x "
              f"Captum, {row['service_s']:.3f} s through the service", file=sys.stderr)
    result = {"threads": args.threads, "dense_gflops": {k: v / 1e9 for k, v in rates.items()},
              "fma_peak_gflops": peak / 1e9 if peak else None, "baseline_malloc": args.baseline_malloc,
              "models": rows}
    print(json.dumps(result, indent=1) if args.json else render(result))


def render(result):
    """The tables, from what --json prints."""
    gflops = result["dense_gflops"]
    rate = max(gflops.values())
    lines = [f"float32 dense-matrix rate, {result['threads']} threads, 2048^3: "
             + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in gflops.items()) + " (the best is the % base)",
             f"the baselines on {result.get('baseline_malloc', 'glibc')}'s malloc"]
    fma = result.get("fma_peak_gflops")  # absent from runs before it was measured
    if fma:
        lines.append(f"multiply-add peak, {result['threads']} threads: {fma:.1f} GFLOP/s; ceiling: the original's "
                     "time over the counted FLOPs' at that peak")
    lines += ["", "| model | original s | Captum IG s | ours, HTTP s | ours, engine s | vs original | vs Captum | "
              "engine GFLOP/s (% of best) | peak MB: original / Captum / worker | batch (MB a point) |"
              + (" ceiling vs original |" if fma else ""),
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if fma else "")]
    for r in result["models"]:
        peak = r["peak_mb"]
        ceiling = f" {r['original_s'] / (r['pass_gflop'] / fma):.2f}x |" if fma else ""
        lines.append(f"| {r['model']} | {r['original_s']:.3f} | {r['captum_s']:.3f} | {r['service_s']:.3f} | "
                     f"{r['engine_s']:.3f} | {r['speedup_vs_original']:.2f}x | {r['speedup_vs_captum']:.2f}x | "
                     f"{r['engine_gflops']:.0f} ({100 * r['engine_gflops'] / rate:.0f}%) | "
                     f"{peak['original']:.0f} / {peak['captum']:.0f} / {peak['worker']:.0f} | "
                     f"{r['batch']} ({r['mb_per_point']:.1f}) |" + ceiling)
    lines += ["", "Where a request's time goes (ms; share of the client's latency):", "",
              "| model | client | gateway | prepare | attribute | encode (torch.save) | gzip | "
              "HTTP beyond the gateway | all but the passes |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["models"]:
        p, total = r["service_parts_s"], r["service_s"]

        def cell(seconds):
            return f"{1000 * seconds:.1f} ({100 * seconds / total:.1f}%)"

        lines.append(f"| {r['model']} | {1000 * total:.1f} | {cell(p['gateway'])} | {cell(p['prepare'])} | "
                     f"{cell(p['attribute'])} | {cell(p['encode'])} | {cell(p['gzip'])} | "
                     f"{cell(r['outside_gateway_s'])} | {cell(total - p['attribute'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
