#!/usr/bin/env python3
"""Several targets in one request against one request per target, on the
default model and CIFAR-10 test images (../shared/data/cifar10/test.zip).

    /usr/bin/python3 benchmarks/targets.py [--images 5] [--k 1 2 3 5 10] [--n-steps 50] [--threads 2] [--json]

For each image and each k: the worker's seconds for top_k=k in one request
(one forward pass per chunk of path points, k backward passes), and the sum
over the same k classes asked one request each. Medians over the images are
printed. A benchmark: it asserts nothing."""

import argparse
import json
import os
import statistics
import sys
import zipfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))

import reference_models as rm  # noqa: E402
from service import Gateway, http  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 5, 10])
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    archive = zipfile.ZipFile(rm.CIFAR10_TEST_ZIP)

    def attribute(url, image, query):
        status, headers, body = http("POST", url + "/v1/attributions" + query + f"&n_steps={args.n_steps}"
                                     "&format=json", image, {"Content-Type": "image/jpeg"})
        if status != 200:
            raise SystemExit(f"{query}: {status} {body[:200]}")
        doc = json.loads(body)
        return doc["summary"] if "summary" in doc else [{"target_class": doc["target_class"],
                                                         "compute_seconds": float(headers["X-Compute-Seconds"])}]

    rows = []
    with Gateway() as gateway:
        gateway.start_worker(threads=args.threads, quiet=True)
        gateway.wait_ready()
        images = [archive.read(f"test/{rm.CIFAR10_CLASSES[i % 10]}/{i // 10:04d}.jpg") for i in range(args.images)]
        attribute(gateway.url, images[0], "?target=0")  # warm up
        for k in args.k:
            together, apart = [], []
            for image in images:
                summary = attribute(gateway.url, image, f"?top_k={k}")
                together.append(summary[0]["compute_seconds"])
                apart.append(sum(attribute(gateway.url, image, f"?target={s['target_class']}")[0]["compute_seconds"]
                                 for s in summary))
            rows.append({"k": k, "one_request_s": statistics.median(together),
                         "k_requests_s": statistics.median(apart)})
    if args.json:
        print(json.dumps({"n_steps": args.n_steps, "threads": args.threads, "images": args.images, "rows": rows}))
        return
    print(f"default model, n_steps {args.n_steps}, {args.threads} threads, median of {args.images} images "
          "(the worker's seconds)")
    print(f"{'k':>3}  {'top_k=k, one request':>21}  {'k requests':>10}  {'saved':>6}")
    for r in rows:
        saved = 1 - r["one_request_s"] / r["k_requests_s"]
        print(f"{r['k']:>3}  {r['one_request_s']:>19.3f} s  {r['k_requests_s']:>8.3f} s  {100 * saved:>5.0f}%")


if __name__ == "__main__":
    main()
