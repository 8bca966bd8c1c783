#!/usr/bin/env python3
"""What compressing the original's answer costs and saves: one POST /model/
answer (the embedded default model, n_steps 50, a 40 x 50 test picture) from a
gateway and a worker on 127.0.0.1, stored as the worker sends it by default,
then compressed by zlib at gzip levels 1, 6 (the original's default) and 9.

    /usr/bin/python3 benchmarks/gzip_levels.py [--repeats 5] [--n-steps 50]

Prints each level's size and its median time to compress (one thread)."""

import argparse
import gzip
import json
import os
import statistics
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))

from service import Gateway, http  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-steps", type=int, default=50)
    args = parser.parse_args()
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    body = json.dumps({"img_data": pixels.tolist(), "target_class": "cat", "n_steps": args.n_steps}).encode()
    with Gateway() as gateway:
        gateway.start_worker(quiet=True)
        gateway.wait_ready()
        status, _, answer = http("POST", gateway.url + "/model/", body, {"Content-Type": "application/json"})
    if status != 200:
        sys.exit(f"gzip_levels: the service answered {status}: {answer[:200]!r}")
    raw = gzip.decompress(answer)
    print(f"n_steps {args.n_steps}: torch.save dict {len(raw) / 1e6:.2f} MB; as sent (level 0, stored) "
          f"{len(answer) / 1e6:.2f} MB")
    for level in (1, 6, 9):
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            packed = zlib.compressobj(level, zlib.DEFLATED, 31)
            size = len(packed.compress(raw) + packed.flush())
            seconds.append(time.perf_counter() - started)
        print(f"level {level}: {size / 1e6:.2f} MB in {1000 * statistics.median(seconds):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
