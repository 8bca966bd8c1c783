#!/usr/bin/env python3
"""A folder of CIFAR-10 test images explained by `intgrads-images explain`
with two workers behind one gateway, one image at a time against two at a
time: the wall time of each and their ratio.

    /usr/bin/python3 benchmarks/explain_folder.py [--images 32] [--workers 2] [--threads 1]
        [--n-steps 50] [--concurrency 1,2] [--json]

The images are the first --images members of ../shared/data/cifar10/test.zip
(sorted by name), written to a temporary folder and removed afterwards. The
workers serve the embedded default model on the CPU with --threads threads
each; everything runs on 127.0.0.1. Each run is a fresh --out folder (no
resume) with the format npz."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))

import reference_models as rm  # noqa: E402
from service import BIN, Gateway  # noqa: E402

CIFAR_TEST = rm.CIFAR10_TEST_ZIP


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--concurrency", default="1,2")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not os.path.isfile(CIFAR_TEST):
        sys.exit(f"explain_folder: {CIFAR_TEST} is missing")
    work = tempfile.mkdtemp(prefix="intgrads-explain-bench-")
    try:
        folder = os.path.join(work, "images")
        os.makedirs(folder)
        with zipfile.ZipFile(CIFAR_TEST) as archive:
            members = sorted(n for n in archive.namelist() if n.endswith(".jpg"))[:args.images]
            for i, name in enumerate(members):
                with open(os.path.join(folder, f"{i:03d}-{os.path.basename(os.path.dirname(name))}.jpg"), "wb") as f:
                    f.write(archive.read(name))
        results = []
        with Gateway() as gateway:
            for _ in range(args.workers):
                gateway.start_worker(threads=args.threads, quiet=True)
            gateway.wait_ready()
            while len(gateway.workers()) < args.workers:
                time.sleep(0.1)
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                out = os.path.join(work, f"out-{concurrency}")
                started = time.time()
                run = subprocess.run([os.path.join(BIN, "intgrads-images"), "explain", folder, "--out", out,
                                      "--server", gateway.url, "--concurrency", str(concurrency), "--n-steps",
                                      str(args.n_steps), "--format", "npz"], capture_output=True, text=True)
                seconds = time.time() - started
                if run.returncode != 0:
                    sys.exit(f"explain_folder: explain failed:\n{run.stdout}\n{run.stderr}")
                results.append({"concurrency": concurrency, "seconds": round(seconds, 2),
                                "images_per_second": round(len(members) / seconds, 3)})
        base = results[0]["seconds"]
        for r in results:
            r["speedup"] = round(base / r["seconds"], 2)
        if args.json:
            print(json.dumps({"images": len(members), "workers": args.workers, "threads": args.threads,
                              "n_steps": args.n_steps, "runs": results}))
        else:
            print(f"{len(members)} images, {args.workers} workers x {args.threads} thread(s), n_steps {args.n_steps}")
            for r in results:
                print(f"  concurrency {r['concurrency']}: {r['seconds']:7.2f} s  {r['images_per_second']:6.2f} img/s"
                      f"  x{r['speedup']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
