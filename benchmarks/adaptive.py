#!/usr/bin/env python3
"""Adaptive steps (tolerance) against a fixed n_steps=50 at the same
convergence delta, on the default model and CIFAR-10 test images (two per
class, ../shared/data/cifar10/test.zip), each explained for its true class.

    /usr/bin/python3 benchmarks/adaptive.py [--per-class 2] [--threads 2] [--json]

For every image: n_steps=50 gives a relative gap r = |delta| / |f(x) - f(0)|;
then tolerance=r asks adaptive steps for the same gap. Printed: the path
points the adaptive run spent (all its tries: 8, 16, 32, ...), the n_steps it
ended on, the worker's seconds for each, and whether it met r. A benchmark:
it asserts nothing."""

import argparse
import io
import json
import os
import statistics
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))

import reference_models as rm  # noqa: E402
from service import Gateway, http  # noqa: E402


def spent(n_final):
    total, n = 0, 8
    while n < n_final:
        total += n
        n *= 2
    return total + n_final


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    archive = zipfile.ZipFile(rm.CIFAR10_TEST_ZIP)
    rows = []
    with Gateway() as gateway:
        gateway.start_worker(threads=args.threads, quiet=True)
        gateway.wait_ready()
        for label, name in enumerate(rm.CIFAR10_CLASSES):
            for k in range(args.per_class):
                image = archive.read(f"test/{name}/{k:04d}.jpg")

                def attribute(query):
                    status, headers, body = http("POST", gateway.url + f"/v1/attributions?target={label}&format=npz&"
                                                 + query, image, {"Content-Type": "image/jpeg"})
                    assert status == 200, body[:300]
                    with np.load(io.BytesIO(body)) as d:
                        delta = float(d["convergence_delta"])
                        change = float(d["integrated_grads"].sum()) - delta
                    return delta, change, headers

                delta, change, fixed = attribute("n_steps=50")
                relative = abs(delta) / abs(change)
                a_delta, a_change, adaptive = attribute(f"tolerance={max(relative, 1e-6):.9g}")
                n_final = int(adaptive["X-N-Steps"])
                rows.append({"image": f"{name}/{k:04d}", "relative_gap_50": relative,
                             "adaptive_relative_gap": abs(a_delta) / abs(a_change), "adaptive_n_steps": n_final,
                             "adaptive_points": spent(n_final), "met": "X-Tolerance-Met" not in adaptive,
                             "seconds_50": float(fixed["X-Compute-Seconds"]),
                             "seconds_adaptive": float(adaptive["X-Compute-Seconds"])})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'image':<16} {'gap@50':>8} {'adaptive gap':>12} {'n_final':>7} {'points':>6} {'met':>4} "
          f"{'s@50':>6} {'s adapt':>7}")
    for r in rows:
        print(f"{r['image']:<16} {r['relative_gap_50']:8.2%} {r['adaptive_relative_gap']:12.2%} "
              f"{r['adaptive_n_steps']:7d} {r['adaptive_points']:6d} {str(r['met']):>4} {r['seconds_50']:6.3f} "
              f"{r['seconds_adaptive']:7.3f}")
    print(f"median points: adaptive {statistics.median(r['adaptive_points'] for r in rows)} vs 50; "
          f"median seconds: adaptive {statistics.median(r['seconds_adaptive'] for r in rows):.3f} vs "
          f"{statistics.median(r['seconds_50'] for r in rows):.3f}; met {sum(r['met'] for r in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
