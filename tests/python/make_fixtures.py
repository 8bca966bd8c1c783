"""Writes torch.save files with real PyTorch for the C++ reader tests, each
with a JSON file of what it holds (keys, shapes, dtypes, values).

usage: make_fixtures.py OUTDIR"""

import collections
import json
import os
import sys

import numpy as np
import torch
from PIL import Image


def expected(tensors):
    return {
        key: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
              "values": t.detach().double().flatten().tolist()}
        for key, t in tensors.items()
    }


def save(outdir, name, obj, tensors, legacy):
    suffix = "legacy" if legacy else "zip"
    torch.save(obj, os.path.join(outdir, f"{name}_{suffix}.pth"), _use_new_zipfile_serialization=not legacy)
    with open(os.path.join(outdir, f"{name}_{suffix}.json"), "w") as f:
        json.dump(expected(tensors), f)


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2))
    net[1].running_mean.uniform_()
    sd = net.state_dict()  # an OrderedDict with _metadata: pickled with BUILD
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    dtypes = collections.OrderedDict(
        half=torch.linspace(-2, 2, 7).half(),
        double=torch.linspace(-1, 1, 5, dtype=torch.float64),
        long=torch.arange(-3, 4, dtype=torch.int64),
        transposed=base.t(),             # non-contiguous view
        column=base[:, 2],               # strided view with an offset
        shared_a=base[1:3],              # two views of one storage
        shared_b=base.view(-1)[5:11],
        scalar=torch.tensor(3.5),
    )
    for legacy in (False, True):
        save(outdir, "state_dict", sd, sd, legacy)
        parallel = collections.OrderedDict(("module." + k, v) for k, v in sd.items())
        save(outdir, "data_parallel", parallel, sd, legacy)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        net(torch.randn(2, 3, 3, 3)).sum().backward()
        optimizer.step()
        checkpoint = {"epoch": 7, "model_state_dict": net.state_dict(),
                      "optimizer_state_dict": optimizer.state_dict(), "note": "best", "acc": 0.93}
        save(outdir, "training_checkpoint", checkpoint, net.state_dict(), legacy)
        save(outdir, "dtypes", dtypes, dtypes, legacy)
    write_resize_cases(outdir)
    write_dataset(outdir)


# A labelled image set in both layouts the trainer and `evaluate` read:
# dataset/train/<class>/<n>.png and dataset.zip (stored members
# train/<class>/<n>.jpg|png). Each image is one flat colour of its class, so a
# reader that mixes labels up is seen; one image is 40 x 40 (resized to 32).
DATASET = {"airplane": (200, 30, 30), "cat": (30, 200, 30), "ship": (30, 30, 200)}


def write_dataset(outdir):
    import io
    import zipfile
    root = os.path.join(outdir, "dataset")
    with zipfile.ZipFile(os.path.join(outdir, "dataset.zip"), "w", zipfile.ZIP_STORED) as archive:
        for name, colour in DATASET.items():
            os.makedirs(os.path.join(root, "train", name), exist_ok=True)
            for n in range(3):
                size = 40 if (name, n) == ("ship", 2) else 32
                image = Image.new("RGB", (size, size), tuple(c + 10 * n for c in colour))
                image.save(os.path.join(root, "train", name, f"{n}.png"))
                data = io.BytesIO()
                image.save(data, format="PNG")
                archive.writestr(f"train/{name}/{n}.png", data.getvalue())
        archive.writestr("train/README.txt", "not an image: skipped")


# (name, input width, height, mode, output width, height): Pillow's bilinear
# resize is the oracle for ours, down and up, square and not.
RESIZE_CASES = [
    ("same", 32, 32, "RGB", 32, 32),
    ("down2", 64, 48, "RGB", 32, 32),
    ("down3", 100, 75, "RGB", 32, 32),
    ("down_big", 500, 333, "RGB", 32, 32),
    ("odd", 33, 31, "RGB", 32, 32),
    ("up", 17, 23, "RGB", 32, 32),
    ("mixed", 40, 12, "RGB", 24, 36),
    ("grey", 50, 40, "L", 32, 32),
    ("photo_like", 320, 240, "RGB", 32, 32),
]


def write_resize_cases(outdir):
    rng = np.random.default_rng(0)
    for name, w, h, mode, ow, oh in RESIZE_CASES:
        channels = 3 if mode == "RGB" else 1
        noise = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
        # Smooth gradients plus noise, so that both flat and sharp areas are covered.
        yy, xx = np.mgrid[0:h, 0:w]
        ramp = ((xx * 255 // max(w - 1, 1) + yy * 127 // max(h - 1, 1)) % 256).astype(np.uint8)
        pixels = np.where(rng.random((h, w, 1)) < 0.5, noise, ramp[..., None]).astype(np.uint8)
        image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
        image.save(os.path.join(outdir, f"resize_{name}.png"))
        resized = np.asarray(image.resize((ow, oh), Image.BILINEAR))
        if mode == "L":
            resized = np.repeat(resized[..., None], 3, axis=2)
        resized.astype(np.uint8).tofile(os.path.join(outdir, f"resize_{name}_{ow}x{oh}.bin"))


if __name__ == "__main__":
    main(sys.argv[1])
