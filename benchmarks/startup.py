#!/usr/bin/env python3
"""How long a worker takes from its start to being ready (announced to the
gateway and listed by /v1/workers), with the embedded default model or a
checkpoint, and one attribution through the service right after.

    /usr/bin/python3 benchmarks/startup.py [--repeats 5] [-lb PATH | -bp PATH] [--threads 2]

Runs a gateway and workers on 127.0.0.1; prints the median and worst time
to ready and the first request's latency (n_steps 50)."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))

from service import BIN, Gateway, http, stop, wait_until, worker_key_flags  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-lb", "--lanet-path")
    parser.add_argument("-bp", "--bit-path")
    args = parser.parse_args()
    model = (["-lb", args.lanet_path] if args.lanet_path else ["-bp", args.bit_path] if args.bit_path else [])
    pixels = [[[(x * 8 + y) % 256, (y * 8) % 256, (x * y) % 256] for x in range(32)] for y in range(32)]
    body = json.dumps({"img_data": pixels, "target_class": "cat"}).encode()
    gateway = Gateway(heartbeat_ms=1000)
    ready, first = [], []
    try:
        for _ in range(args.repeats):
            started = time.perf_counter()
            worker = subprocess.Popen([os.path.join(BIN, "intgrads-worker"), "--connect", gateway.endpoint, *model,
                                       "--threads", str(args.threads), *worker_key_flags()],
                                      stderr=subprocess.DEVNULL)
            try:
                wait_until(lambda: len(gateway.workers()) == 1, what="the worker", timeout=120)
                ready.append(time.perf_counter() - started)
                started = time.perf_counter()
                status = http("POST", gateway.url + "/model/", body)[0]
                assert status == 200, status
                first.append(time.perf_counter() - started)
            finally:
                stop(worker)
            wait_until(lambda: not gateway.workers(), what="the worker to leave")
    finally:
        gateway.stop()
    what = " ".join(model) or "the embedded default model"
    print(f"worker with {what}, {args.threads} threads, {args.repeats} starts: ready in median "
          f"{statistics.median(ready):.2f} s (worst {max(ready):.2f} s); first request (n_steps 50) median "
          f"{statistics.median(first):.2f} s")


if __name__ == "__main__":
    main()
