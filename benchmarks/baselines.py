#!/usr/bin/env python3
"""The Python baselines of the performance comparison (benchmarks/compare.py).

    /usr/bin/python3 benchmarks/baselines.py NAME [--method captum|original] [--n-steps 50]
                     [--threads 2] [--repeats 3] [--json]

NAME is a network of ../shared/spec/reference (bit-m-r50x1, bit-s-r101x3,
lanet-c16-l8, lanet-c128-l24) under its deterministic weights, or default
(the embedded default model, models/default-lanet.pth). The networks
are our own rendering in plain PyTorch (Debian's python3-torch), written the
way the original modules run: the weights are parameters that require
gradients, as in a loaded model, and the weight-standardized convolutions
standardize in every forward pass. Before timing, the logits of the reference
image are checked against the reference's (within 1e-4 relative); a network
that differs is refused.

Methods, both in eval mode, n_steps Gauss-Legendre path points in one batch,
zero baseline in the normalized space, the reference image, target 3 (cat):

  captum    Captum's IntegratedGradients alone, written out: one forward and
            one input-gradient backward over all path points, then
            IG = (x - baseline) * sum_k s_k grad_k.
  original  the original server's method: one such pass for the per-step
            gradients (integrated_directional_grads), then IG from another
            (compat.md: "two separate passes"). Rendered batched, which is
            the most generous reading: no handicap.

Prints the median seconds of `repeats` timed runs after one warm-up run, the
peak resident memory of this process, the counted FLOPs of one forward
pass of one image (convolutions and linear layers, 2 per multiply-add; the
input-gradient backward pass costs the same), and the malloc it ran on
(glibc's, or tcmalloc under LD_PRELOAD=libtcmalloc_minimal.so.4, which
benchmarks/compare.py uses: with glibc's, every freed batch-sized tensor goes
back to the kernel and the next one is page-faulted in again). A benchmark:
it refuses only a network whose logits, or at n_steps 50 whose IG (within 1e-3 of the largest
|IG|), differ from the reference's: the baselines compute what we compute."""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))

import reference_models as rm  # noqa: E402

FLOPS = [0]  # multiply-adds x 2 of the convolutions and linear layers, while counting


def conv(x, w, b=None, stride=1, padding=0, groups=1):
    y = F.conv2d(x, w, b, stride, padding, 1, groups)
    FLOPS[0] += 2 * y.numel() * w.shape[1] * w.shape[2] * w.shape[3]
    return y


def linear(x, w, b):
    FLOPS[0] += 2 * x.shape[0] * w.shape[0] * w.shape[1]
    return F.linear(x, w, b)


def bit_standardize(w):
    var, mean = torch.var_mean(w, dim=[1, 2, 3], keepdim=True, unbiased=False)
    return (w - mean) / torch.sqrt(var + 1e-10)


def bit_forward(W, x):
    """BiT (compat.md): root, four blocks of pre-activation bottlenecks, head."""
    def gn(y, p):
        return F.group_norm(y, 32, W[p + ".weight"], W[p + ".bias"], 1e-5)

    y = conv(x, bit_standardize(W["root.conv.weight"]), stride=2, padding=3)
    y = F.max_pool2d(F.pad(y, (1, 1, 1, 1)), 3, 2)
    for block in range(1, 5):
        unit = 1
        while f"body.block{block}.unit{unit:02d}.conv1.weight" in W:
            p = f"body.block{block}.unit{unit:02d}."
            stride = 2 if block > 1 and unit == 1 else 1
            a = F.relu(gn(y, p + "gn1"))
            shortcut = y
            if p + "downsample.weight" in W:
                shortcut = conv(a, bit_standardize(W[p + "downsample.weight"]), stride=stride)
            h = conv(a, bit_standardize(W[p + "conv1.weight"]))
            h = conv(F.relu(gn(h, p + "gn2")), bit_standardize(W[p + "conv2.weight"]), stride=stride, padding=1)
            y = conv(F.relu(gn(h, p + "gn3")), bit_standardize(W[p + "conv3.weight"])) + shortcut
            unit += 1
    y = F.relu(gn(y, "head.gn")).mean(dim=(2, 3), keepdim=True)
    return conv(y, W["head.conv.weight"], W["head.conv.bias"]).flatten(1)


# LaNet: the original server's genotype (compat.md). Node i applies operations
# ARCH[2i], ARCH[2i+1] to states ARCH[14+2i], ARCH[15+2i].
ARCH = [2, 2, 0, 2, 1, 2, 0, 2, 2, 3, 2, 1, 2, 0, 0, 1, 1, 1, 2, 1, 1, 0, 3, 4, 3, 0, 3, 1]
SEP3, MAXPOOL, SKIP, SEP5 = 0, 1, 2, 3
CONCAT = [s for s in range(2, 9) if s not in ARCH[14:]]


def lanet_standardize(w):
    centered = w - w.mean(1, keepdim=True).mean(2, keepdim=True).mean(3, keepdim=True)
    return centered / (centered.view(centered.size(0), -1).std(1).view(-1, 1, 1, 1) + 1e-5)


def lanet_forward(W, x):
    def bn(y, p):
        return F.batch_norm(y, W[p + "running_mean"], W[p + "running_var"], W[p + "weight"], W[p + "bias"],
                            False, 0.1, 1e-5)

    def relu_conv_bn(y, p):
        return bn(conv(F.relu(y), lanet_standardize(W[p + "op.1.weight"])), p + "op.2.")

    def factorized_reduce(y, p):
        r = F.relu(y)
        return bn(torch.cat([conv(r, W[p + "conv_1.weight"], stride=2),
                             conv(r[:, :, 1:, 1:], W[p + "conv_2.weight"], stride=2)], 1), p + "bn.")

    def sep_conv(y, p, stride, padding):
        c = y.size(1)
        y = conv(F.relu(y), W[p + "op.1.weight"], stride=stride, padding=padding, groups=c)
        y = bn(conv(y, lanet_standardize(W[p + "op.2.weight"])), p + "op.3.")
        y = conv(F.relu(y), W[p + "op.5.weight"], padding=padding, groups=c)
        return bn(conv(y, lanet_standardize(W[p + "op.6.weight"])), p + "op.7.")

    layers = 0
    while f"cells.{layers}.preprocess1.op.1.weight" in W:
        layers += 1
    s0 = s1 = bn(conv(x, W["stem.0.weight"], padding=1), "stem.1.")
    for i in range(layers):
        p = f"cells.{i}."
        reduction = i in (layers // 3, 2 * layers // 3)
        pre0 = factorized_reduce if p + "preprocess0.conv_1.weight" in W else relu_conv_bn
        states = [pre0(s0, p + "preprocess0."), relu_conv_bn(s1, p + "preprocess1.")]
        for node in range(7):
            total = 0
            for k in (2 * node, 2 * node + 1):
                q, op, source = f"{p}_ops.{k}.", ARCH[k], ARCH[14 + k]
                stride = 2 if reduction and source < 2 else 1
                y = states[source]
                if op == MAXPOOL:
                    y = F.max_pool2d(y, 3, stride, 1)
                elif op == SKIP:
                    y = factorized_reduce(y, q) if stride == 2 else y
                else:
                    y = sep_conv(y, q, stride, 1 if op == SEP3 else 2)
                total = total + y
            states.append(total)
        s0, s1 = s1, torch.cat([states[s] for s in CONCAT], 1)
    return linear(F.adaptive_avg_pool2d(s1, 1).flatten(1), W["classifier.weight"], W["classifier.bias"])


DEFAULT_MODEL = os.path.join(rm.REPO, "models", "default-lanet.pth")


def reference(name):
    """The reference file of `name` (the default model: LaNet-C16-L8's), with
    the image of its family's small configuration where it has none
    (lanet-c128-l24 gives keys and shapes only)."""
    ref = rm.reference("lanet-c16-l8" if name == "default" else name)
    if ref is None:
        raise SystemExit(f"no reference named {name} in {rm.REFERENCE_DIR}")
    if "image_uint8_hwc" not in ref:
        small = rm.reference("bit-m-r50x1" if ref["family"] == "bit" else "lanet-c16-l8")
        ref = dict(ref, image_uint8_hwc=small["image_uint8_hwc"])
    return ref


def load(name):
    """(reference, forward, weights). "default" is the embedded default model
    (models/default-lanet.pth, a LaNet) on the LaNet reference's image; its
    logits have no reference, so compare.py checks its IG against ours."""
    ref = reference(name)
    if name == "default":
        checkpoint = torch.load(DEFAULT_MODEL)
        state = checkpoint.get("model_state_dict", checkpoint)
        ref = dict(ref, name="default", expected_logits_eval=None, expected_integrated_grads=None)
    else:
        state = rm.state_dict(ref)
    W = {}
    for key, tensor in state.items():
        buffer = key.endswith(("running_mean", "running_var", "num_batches_tracked"))
        W[key] = tensor if buffer else tensor.requires_grad_(True)  # parameters, as a loaded model has them
    return ref, (bit_forward if ref["family"] == "bit" else lanet_forward), W


def malloc_in_use():
    """"tcmalloc" when this process allocates through tcmalloc (LD_PRELOAD,
    as benchmarks/compare.py runs the baselines), else "glibc"."""
    with open("/proc/self/maps") as f:
        return "tcmalloc" if "libtcmalloc" in f.read() else "glibc"


def gauss_legendre(n):
    x, w = np.polynomial.legendre.leggauss(n)
    return list(0.5 * (1 + x)), list(0.5 * w)


def path_gradients(forward, W, x, baseline, alphas, target):
    """One forward and one input-gradient backward over all path points."""
    points = torch.cat([baseline + a * (x - baseline) for a in alphas]).requires_grad_()
    out = forward(W, points)
    return torch.autograd.grad(torch.unbind(out[:, target]), points)[0]


def integrated_gradients(forward, W, x, baseline, n_steps, target):
    alphas, steps = gauss_legendre(n_steps)
    grads = path_gradients(forward, W, x, baseline, alphas, target)
    weighted = grads * torch.tensor(steps, dtype=grads.dtype).view(-1, 1, 1, 1)
    return weighted.sum(0, keepdim=True) * (x - baseline)


def original(forward, W, x, baseline, n_steps, target):
    alphas, _ = gauss_legendre(n_steps)
    directional = path_gradients(forward, W, x, baseline, alphas, target)
    return integrated_gradients(forward, W, x, baseline, n_steps, target), directional


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--method", choices=["captum", "original"], default="captum")
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save-ig", metavar="PATH", help="write the IG (1 x 3 x S x S) as .npy")
    parser.add_argument("--flops-only", action="store_true",
                        help="print the FLOPs counted: one image's forward pass, and one attribution's n_steps "
                             "forward and input-gradient passes (twice the forward's), then stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ref, forward, W = load(args.name)
    x = rm.normalized_input(ref)
    baseline = torch.zeros_like(x)
    with torch.no_grad():
        FLOPS[0] = 0
        logits = forward(W, x)[0]
        flops = FLOPS[0]
    if args.flops_only:
        print(f"{args.name}: {flops / 1e9:.3f} GFLOP a forward pass of one image; "
              f"{2 * flops * args.n_steps / 1e9:.1f} GFLOP an attribution at n_steps {args.n_steps}")
        return
    expected = ref.get("expected_logits_eval")
    if expected is not None:
        error = (logits - torch.tensor(expected)).abs().max().item()
        if error > 1e-4 * max(1.0, max(abs(v) for v in expected)):
            raise SystemExit(f"{args.name}: our rendering's logits differ from the reference by {error:.3g}")
    run = integrated_gradients if args.method == "captum" else original
    target = 3
    times = []
    for i in range(args.repeats + 1):
        started = time.perf_counter()
        result = run(forward, W, x, baseline, args.n_steps, target)
        if i > 0:
            times.append(time.perf_counter() - started)
    ig = result if args.method == "captum" else result[0]
    captum = ref.get("expected_integrated_grads")
    if captum is not None and args.n_steps == 50:
        expected_ig = torch.tensor(captum["integrated_grads_chw"])
        if (ig[0] - expected_ig).abs().max().item() > 1e-3 * expected_ig.abs().max().item():
            raise SystemExit(f"{args.name}: our baseline's IG differs from Captum's in the reference")
    if args.save_ig:
        np.save(args.save_ig, ig.detach().numpy())
    row = {
        "name": args.name, "method": args.method, "n_steps": args.n_steps, "threads": args.threads,
        "seconds": statistics.median(times), "seconds_all": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "forward_flops_per_image": flops, "logits_checked": expected is not None,
        "ig_sum": ig.sum().item(), "malloc": malloc_in_use(),
    }
    if args.json:
        print(json.dumps(row))
    else:
        print(f"{row['name']} {row['method']}: {row['seconds']:.3f} s (median of {args.repeats}), peak "
              f"{row['peak_rss_mb']:.0f} MB, {flops / 1e9:.3f} GFLOP per image forward, {row['malloc']} malloc")


if __name__ == "__main__":
    main()
