"""Checkpoints of the original networks under the deterministic weights of
../shared/spec/reference/README.md, written by real torch.save in the formats
the original server's users have (BiT: a DataParallel state dict; LaNet: a
training checkpoint with 'model_state_dict'), plus request bodies for the
reference image. Used by the Python oracle and end-to-end tests."""

import collections
import json
import os

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The shared folder: CMake's INTGRADS_SHARED_DIR under ctest, else beside the checkout.
SHARED_DIR = os.environ.get("INTGRADS_SHARED_DIR") or os.path.join(REPO, "..", "shared")
REFERENCE_DIR = os.path.join(SHARED_DIR, "spec", "reference")
# CIFAR-10's classes in their label order, and its test images (the
# benchmarks report on them; nothing is trained on them).
CIFAR10_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()
CIFAR10_TEST_ZIP = os.path.join(SHARED_DIR, "data", "cifar10", "test.zip")


def reference(name):
    path = os.path.join(REFERENCE_DIR, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def deterministic_entry(key, shape, dtype):
    """The README's rule: sin(0.37 i + phase) shaped by the entry's role."""
    n = int(np.prod(shape)) if shape else 1
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    phase = (sum(key.encode("utf-8")) % 1000) / 100.0
    s = np.sin(0.37 * np.arange(n, dtype=np.float64) + phase)
    if key.endswith("running_mean"):
        v = 0.05 * s
    elif key.endswith("running_var"):
        v = 16.0 * (1.0 + 0.1 * (s + 1.0))
    elif key.endswith(".bias"):
        v = 0.02 * s
    elif len(shape) == 1:
        v = 1.0 + 0.1 * s
    else:
        fan_in = n // shape[0]
        v = s * np.sqrt(1.0 / fan_in)
    return v.astype(np.float32).reshape(shape)


def state_dict(ref, prefix=""):
    sd = collections.OrderedDict()
    for key, shape, dtype in ref["state_dict"]:
        sd[prefix + key] = torch.from_numpy(deterministic_entry(key, shape, dtype))
    sd._metadata = collections.OrderedDict({"": {"version": 1}})  # as nn.Module.state_dict() has
    return sd


def write_checkpoint(ref, path, legacy=False):
    """BiT as a DataParallel state dict, LaNet as a training checkpoint."""
    if ref["family"] == "bit":
        obj = state_dict(ref, prefix="module.")
    else:
        sd = state_dict(ref)
        obj = {
            "epoch": 599,
            "model_state_dict": sd,
            "optimizer_state_dict": {
                "state": {0: {"momentum_buffer": torch.zeros(3)}},
                "param_groups": [{"lr": 0.025, "momentum": 0.9, "params": [0, 1, 2], "nesterov": False}],
            },
        }
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)


def write_request(ref, path, target_class="cat"):
    with open(path, "w") as f:
        json.dump({"img_data": ref["image_uint8_hwc"], "target_class": target_class}, f)


def load_gzip_dict(path):
    """The original README's snippet, verbatim in effect."""
    import gzip
    from io import BytesIO

    with gzip.open(path, "rb") as fobj:
        x = BytesIO(fobj.read())
        return torch.load(x)


def normalized_input(ref):
    image = np.asarray(ref["image_uint8_hwc"], dtype=np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(ref["normalize_mean"]).view(3, 1, 1)
    std = torch.tensor(ref["normalize_std"]).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


if __name__ == "__main__":
    # python3 tests/python/reference_models.py bit-m-r50x1 bit.pth [--legacy]
    import sys

    if len(sys.argv) < 3:
        sys.exit("usage: reference_models.py NAME OUT.pth [--legacy]  (NAME: a file of ../shared/spec/reference)")
    ref = reference(sys.argv[1])
    if ref is None:
        sys.exit(f"no reference named {sys.argv[1]} in {REFERENCE_DIR}")
    write_checkpoint(ref, sys.argv[2], legacy="--legacy" in sys.argv)
    print(f"wrote {sys.argv[2]}: {ref['name']} under the deterministic reference weights")
