#!/usr/bin/env python3
"""Load test on 127.0.0.1 only: one gateway, workers, a bounded number of
requests at a fixed concurrency, good and bad mixed. It checks that every
request is answered, that no good request gets a 5xx, that bad ones get a
4xx, and that no process's resident memory grows by more than 10% from the
first quarter of the run to the last.

    /usr/bin/python3 benchmarks/load_test.py [--requests 1000] [--concurrency 16] [--workers 2] [--json]

Exits 1 if a check fails."""

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))

import reference_models as rm  # noqa: E402
from service import Gateway, http, start_worker, stop, wait_until  # noqa: E402


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def bodies(ref):
    good = json.dumps({"img_data": ref["image_uint8_hwc"], "target_class": "cat", "n_steps": 2}).encode()
    grey = json.dumps({"img_data": [[9] * 40] * 30, "target_class": 4, "n_steps": 2}).encode()
    bad = [
        b"{not json",
        b'{"img_data": [[[1,2,3]],[[1,2]]], "target_class": "cat"}',
        b'{"img_data": [[[1,2,300]]], "target_class": "cat"}',
        b'{"img_data": [[[1,2,3]]], "target_class": "unicorn"}',
        b'{"img_data": [[[1,2,3]]], "target_class": "cat", "n_steps": -4}',
        b'{"img_data": [[[1,2,3]]], "target_class": "cat", "method": "simpson"}',
        b"[" * 20000 + b"]" * 20000,
        b'{"img_data": [[[1,2,NaN]]], "target_class": "cat"}',
        json.dumps({"img_data": [[[1, 2, 3]] * 5000], "target_class": "cat"}).encode(),  # over --max-image-side
        b"{" + b" " * 2000000 + b"}",  # over --max-body-bytes: refused from its head, the rest read and dropped
    ]
    return [good, grey], bad


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bad-share", type=float, default=0.3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ref = rm.reference("lanet-c16-l8")
    if ref is None:
        sys.exit("needs ../shared/spec/reference/lanet-c16-l8.json")
    good, bad = bodies(ref)
    rng = random.Random(0)
    plan = [(False, rng.choice(bad)) if rng.random() < args.bad_share else (True, rng.choice(good))
            for _ in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = os.path.join(tmp, "lanet.pth")
        rm.write_checkpoint(ref, checkpoint)
        gateway = Gateway("--max-image-side", "1024", "--max-body-bytes", "1000000", heartbeat_ms=500)
        workers = [start_worker(gateway.endpoint, "lanet", checkpoint, heartbeat_ms=500) for _ in range(args.workers)]
        try:
            wait_until(lambda: len(gateway.workers()) == args.workers, what="workers")
            processes = {"gateway": gateway.process.pid, **{f"worker{i}": w.pid for i, w in enumerate(workers)}}
            results = [None] * len(plan)
            samples = {name: [] for name in processes}
            lock = threading.Lock()
            cursor = iter(range(len(plan)))
            done = [0]

            def client():
                while True:
                    with lock:
                        i = next(cursor, None)
                    if i is None:
                        return
                    try:
                        status = http("POST", gateway.url + "/model/", plan[i][1], timeout=300)[0]
                    except OSError as e:
                        status = f"no answer: {e}"
                    with lock:
                        results[i] = status
                        done[0] += 1
                        quarter = min(3, 4 * done[0] // len(plan))
                        if done[0] % 25 == 0:
                            for name, pid in processes.items():
                                samples[name].append((quarter, rss_kib(pid)))

            started = time.time()
            threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            seconds = time.time() - started
        finally:
            for w in workers:
                stop(w)
            gateway.stop()
    unanswered = [r for r in results if not isinstance(r, int)]
    good_5xx = sum(1 for (is_good, _), r in zip(plan, results) if is_good and isinstance(r, int) and r >= 500)
    good_not_200 = sum(1 for (is_good, _), r in zip(plan, results) if is_good and r != 200)
    bad_not_4xx = sum(1 for (is_good, _), r in zip(plan, results) if not is_good and not (400 <= r < 500))
    growth = {}
    for name, series in samples.items():
        first = [kib for q, kib in series if q == 0]
        last = [kib for q, kib in series if q == 3]
        if first and last:
            growth[name] = {"first_quarter_kib": max(first), "last_quarter_kib": max(last),
                            "growth": max(last) / max(first) - 1}
    report = {"requests": len(plan), "good": sum(g for g, _ in plan), "concurrency": args.concurrency,
              "workers": args.workers, "seconds": seconds, "unanswered": len(unanswered), "good_5xx": good_5xx,
              "good_not_200": good_not_200, "bad_not_4xx": bad_not_4xx, "memory": growth}
    ok = (not unanswered and good_5xx == 0 and good_not_200 == 0 and bad_not_4xx == 0
          and all(g["growth"] < 0.10 for g in growth.values()))
    report["ok"] = ok
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['requests']} requests ({report['good']} good) at concurrency {args.concurrency}, "
              f"{args.workers} workers, {seconds:.1f} s")
        print(f"unanswered {len(unanswered)}, good with 5xx {good_5xx}, good not 200 {good_not_200}, "
              f"bad not 4xx {bad_not_4xx}")
        for name, g in growth.items():
            print(f"{name}: RSS max {g['first_quarter_kib']} KiB in the first quarter, {g['last_quarter_kib']} KiB "
                  f"in the last ({100 * g['growth']:+.1f}%)")
        print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
