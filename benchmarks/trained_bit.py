#!/usr/bin/env python3
"""Completeness on a trained BiT: Gauss-Legendre against the scan rule.

    /usr/bin/python3 benchmarks/trained_bit.py [--steps 1500] [--images 10] [--log-gl 100,200,400]
                     [--work DIR] [--threads 2] [--scan-json PATH] [--json]
    /usr/bin/python3 benchmarks/trained_bit.py --render SAVED.json

The reference BiT weights (deterministic sines) make f(a x) wander at small
a, so no quadrature converges on them (docs/FAITHFULNESS.md). The
faithfulness issue is about trained BiTs, whose scale invariance should
put the change of f near a = 0 as a rise. No trained BiT can be downloaded
here, so this trains one and measures:

1. BiT-M-R50x1 with 10 classes (our rendering in benchmarks/baselines.py:
   weight standardization in every pass, GroupNorm, pre-activation
   bottlenecks), from a seeded random initialization (convolutions He
   normal, GroupNorm 1 and 0, the head zero, as BiT initializes it), on
   CIFAR-10's train.zip with BiT's preprocessing ((x / 255 - 0.5) / 0.5,
   random horizontal flips), SGD with momentum 0.9, batches of 64, a linear
   warm-up and a cosine decay over --steps steps. The last 2,000 images of
   a seeded shuffle of train.zip are held out and only reported on.
2. Writes it as the original's users have it (a DataParallel state dict,
   torch.save) to DIR/bit-m-r50x1-cifar10.pth.
3. Runs `intgrads-images path-scan` on the first --images images of
   test.zip, taken round the classes (test/airplane/0000.jpg,
   test/automobile/0000.jpg, ...), each with its own class as the target,
   and prints the completeness gap |sum(IG) - (f(x) - f(baseline))| /
   |f(x) - f(baseline)| of Gauss-Legendre and of the scan rule at every
   n_steps path-scan runs: per image at n_steps 50, then the median and the
   largest over the images.
4. For each image, how smooth the integrand is where it lives, whatever
   the rule: the gap of Gauss-Legendre in u = ln a on [1e-11, 1] with
   --log-gl points (default 100, 200, 400; f' from our Python rendering,
   the piece below 1e-11 taken exactly from f).

On the 2-core build machine a step takes ~0.7 s (--steps 1500: ~18 min),
path-scan and the ln-a check ~25 s an image."""

import argparse
import collections
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import baselines  # noqa: E402
import reference_models as rm  # noqa: E402  (on the path through baselines)
from service import BIN  # noqa: E402

TRAIN_ZIP = os.path.join(os.path.dirname(rm.CIFAR10_TEST_ZIP), "train.zip")
INTGRADS = os.path.join(BIN, "intgrads-images")
HELD_OUT = 2000
LOG_SMALLEST = 1e-11
BATCH = 64


def read_images(path, names):
    """uint8 H x W x 3 arrays of the zip's members `names`."""
    with zipfile.ZipFile(path) as z:
        return np.stack([np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB")) for n in names])


def labelled_members(path):
    """(member, class index) of every image of a CIFAR-10 zip, in name order."""
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))
    return [(n, rm.CIFAR10_CLASSES.index(n.split("/")[1])) for n in names]


def first_test_images(count):
    """The first `count` members of test.zip taken class by class: the
    first image of each class, then the second of each, and so on."""
    firsts = {}
    for name, c in labelled_members(rm.CIFAR10_TEST_ZIP):
        firsts.setdefault(c, []).append(name)
    return [firsts[i % 10][i // 10] for i in range(count)]


def summarize(scans, methods):
    """Per method, the median and the largest gap over path-scan outputs
    `scans`, at each of their n_steps."""
    columns = range(len(scans[0]["n_steps"]))
    return {m: {"median": [statistics.median(s["gap_fraction"][m][i] for s in scans) for i in columns],
                "largest": [max(s["gap_fraction"][m][i] for s in scans) for i in columns]}
            for m in methods}


def normalize(images):
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5


def initial_weights(seed):
    """BiT-M-R50x1's keys and shapes (the reference's list), initialized."""
    generator = torch.Generator().manual_seed(seed)
    W = collections.OrderedDict()
    for key, shape, _ in rm.reference("bit-m-r50x1")["state_dict"]:
        if key == "head.conv.weight" or key.endswith(".bias"):
            value = torch.zeros(shape)
        elif len(shape) == 1:
            value = torch.ones(shape)
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            value = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
        W[key] = value.requires_grad_(True)
    return W


def accuracy(W, images, labels):
    correct = 0
    with torch.no_grad():
        for first in range(0, len(images), 250):
            logits = baselines.bit_forward(W, normalize(images[first:first + 250]))
            correct += (logits.argmax(1).numpy() == labels[first:first + 250]).sum()
    return correct / len(images)


def train(args):
    members = labelled_members(TRAIN_ZIP)
    order = np.random.default_rng(args.seed).permutation(len(members))
    held, used = order[-HELD_OUT:], order[:-HELD_OUT]
    started = time.perf_counter()
    images = read_images(TRAIN_ZIP, [name for name, _ in members])
    labels = np.array([c for _, c in members])
    print(f"read {len(images)} training images in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    W = initial_weights(args.seed)
    optimizer = torch.optim.SGD(W.values(), lr=args.lr, momentum=0.9, nesterov=True)
    rng = np.random.default_rng(args.seed + 1)
    warmup = max(1, args.steps // 20)
    started = time.perf_counter()
    for step in range(args.steps):
        scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * scale
        batch = rng.choice(used, BATCH, replace=False)
        x = normalize(images[batch])
        flip = torch.from_numpy(rng.random(BATCH) < 0.5)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        loss = F.cross_entropy(baselines.bit_forward(W, x), torch.from_numpy(labels[batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.3f}, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    held_accuracy = accuracy(W, images[held], labels[held])
    return W, held_accuracy, time.perf_counter() - started


def log_gauss_legendre_gaps(W, x, target, ends, counts):
    """The completeness gap of Gauss-Legendre in u = ln a on [ln LOG_SMALLEST, 0]
    with each count of points (weights times a, as da = a du), f' from our
    Python rendering, the piece below LOG_SMALLEST taken exactly from f (ends:
    f at a = 0, LOG_SMALLEST and 1): how smooth the integrand is where it
    lives, whatever the rule."""
    change = ends[2] - ends[0]
    span = -math.log(LOG_SMALLEST)
    gaps = []
    for count in counts:
        nodes, weights = baselines.gauss_legendre(count)  # on [0, 1]
        alphas = np.exp(span * (np.array(nodes) - 1.0))
        steps = span * np.array(weights) * alphas
        total = ends[1] - ends[0]
        for first in range(0, count, 50):
            a = torch.tensor(alphas[first:first + 50], dtype=torch.float32).view(-1, 1, 1, 1)
            points = (a * x).requires_grad_()
            grad = torch.autograd.grad(baselines.bit_forward(W, points)[:, target].sum(), points)[0]
            total += float((steps[first:first + 50] * (grad * x).sum((1, 2, 3)).double().numpy()).sum())
        gaps.append(abs(total - change) / abs(change))
    return gaps


def path_scan(name, image, flags, threads, work):
    """`intgrads-images path-scan --json` (with flags: model flags, --points
    ...) on the test image `name` (uint8 H x W x 3 `image`), its class the
    target; its JSON with the image's name added. The request is written in
    the folder `work`."""
    request = os.path.join(work, "request.json")
    with open(request, "w") as f:
        json.dump({"img_data": image.tolist(), "target_class": name.split("/")[1]}, f)
    out = subprocess.run([INTGRADS, "path-scan", *flags, "--input", request, "--json", "--threads", str(threads)],
                         check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out), image=name)


def path_scans(W, checkpoint, count, threads, log_gl, work):
    """For each image: path-scan's JSON, the target logit of our Python
    rendering at the image and at the baseline (python_f_x,
    python_f_baseline: the worker must compute the same network), and
    log_gauss_legendre_gaps at the counts log_gl."""
    chosen = first_test_images(count)
    scans = []
    for name, image in zip(chosen, read_images(rm.CIFAR10_TEST_ZIP, chosen)):
        x = normalize(image[None])
        target = rm.CIFAR10_CLASSES.index(name.split("/")[1])
        with torch.no_grad():  # f at a = 0, LOG_SMALLEST and 1
            ends = baselines.bit_forward(W, torch.tensor([0.0, LOG_SMALLEST, 1.0]).view(-1, 1, 1, 1) * x)[:, target]
        ends = ends.double().tolist()
        scan = path_scan(name, image, ["-bp", checkpoint, "--points", "46", "--smallest", "1e-9"], threads, work)
        scans.append(dict(scan, python_f_x=ends[2], python_f_baseline=ends[0],
                          log_gl_gap=log_gauss_legendre_gaps(W, x, target, ends, log_gl)))
    return scans


def render(result):
    n_steps, log_gl = result["n_steps"], result["log_gl_points"]
    at50 = n_steps.index(50)
    lines = [f"BiT-M-R50x1 trained {result['steps']} steps of {BATCH} in {result['training_seconds']:.0f} s; "
             f"held-out accuracy {result['held_out_accuracy']:.3f} ({HELD_OUT} train.zip images)", "",
             "| test image (target: its class) | f(x) - f(baseline) | gausslegendre, n_steps 50 | scan, n_steps 50 |"
             + "".join(f" ln-a Gauss-Legendre, {n} |" for n in log_gl),
             "| --- | --- | --- | --- |" + " --- |" * len(log_gl)]
    for image in result["images"]:
        gaps = image["gap_fraction"]
        lines.append(f"| {image['image']} | {image['change']:.4g} | {gaps['gausslegendre'][at50]:.2e} | "
                     f"{gaps['scan'][at50]:.2e} |" + "".join(f" {g:.2e} |" for g in image["log_gl_gap"]))
    lines += ["", "| method, over the images | " + " | ".join(f"n_steps {n}" for n in n_steps) + " |",
              "| --- |" + " --- |" * len(n_steps)]
    for m, stats in result["summary"].items():
        for stat in ("median", "largest"):
            lines.append(f"| {m}, {stat} | " + " | ".join(f"{g:.2e}" for g in stats[stat]) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--log-gl", default="100,200,400", help="point counts of the ln-a Gauss-Legendre check")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", help="where the checkpoint goes (default: a temporary folder)")
    parser.add_argument("--scan-json", help="write the first image's path-scan JSON here (for plot_path_scan.py)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--render", metavar="FILE", help="print the tables of a saved --json output, and stop")
    args = parser.parse_args()
    if args.render:
        with open(args.render) as f:
            print(render(json.load(f)))
        return
    if not os.path.exists(TRAIN_ZIP) or not os.path.exists(rm.CIFAR10_TEST_ZIP):
        raise SystemExit(f"needs CIFAR-10's train.zip and test.zip in {os.path.dirname(TRAIN_ZIP)}")
    if not os.path.exists(INTGRADS):
        raise SystemExit(f"needs {INTGRADS}: build first (tools/build.sh; INTGRADS_BIN names another folder)")
    log_gl = [int(n) for n in args.log_gl.split(",") if n]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or temporary
        os.makedirs(work, exist_ok=True)
        W, held_accuracy, seconds = train(args)
        checkpoint = os.path.join(work, "bit-m-r50x1-cifar10.pth")
        torch.save(collections.OrderedDict(("module." + k, v.detach().clone()) for k, v in W.items()), checkpoint)
        scans = path_scans(W, checkpoint, args.images, args.threads, log_gl, work)
    if args.scan_json:
        with open(args.scan_json, "w") as f:
            json.dump(scans[0], f, indent=1)
    n_steps = scans[0]["n_steps"]
    methods = ["gausslegendre", "scan"]
    summary = summarize(scans, methods)
    keys = ("image", "f_x", "f_baseline", "python_f_x", "python_f_baseline", "log_gl_gap")
    result = {"steps": args.steps, "training_seconds": seconds, "held_out_accuracy": held_accuracy,
              "n_steps": n_steps, "log_gl_points": log_gl, "summary": summary,
              "images": [dict({k: s[k] for k in keys}, change=s["f_x"] - s["f_baseline"],
                              gap_fraction={m: s["gap_fraction"][m] for m in methods}) for s in scans]}
    print(json.dumps(result) if args.json else render(result))


if __name__ == "__main__":
    main()
