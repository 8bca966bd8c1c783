"""Bring your own model, end to end: a TorchScript file written by real
PyTorch (torch.jit.script), its JSON sidecar, a worker started with --model,
requests through the gateway by class name, and the IG checked against
autograd on the same scripted module in Python."""

import gzip
import io
import json
import os
import subprocess
import tempfile
import unittest

import numpy as np
import torch
from PIL import Image

from service import BIN, Gateway, http, stop, worker_key_flags

CLASSES = ["apple", "pear", "plum", "fig", "kiwi"]
MEAN = [0.4, 0.5, 0.6]
STD = [0.2, 0.25, 0.3]
SIDE = 8


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4 * SIDE * SIDE, len(CLASSES))

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).flatten(1))


def captum_style_ig(module, x, target, n_steps):
    """Gauss-Legendre IG from the zero baseline, as Captum computes it."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    alphas = torch.tensor(0.5 * (nodes + 1), dtype=torch.float32).view(-1, 1, 1, 1)
    points = (alphas * x).detach().requires_grad_(True)
    module(points)[:, target].sum().backward()
    steps = torch.tensor(0.5 * weights, dtype=torch.float32).view(-1, 1, 1, 1)
    return (x * (points.grad * steps).sum(0, keepdim=True)).detach()


class OwnModel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        torch.manual_seed(3)
        cls.module = torch.jit.script(Tiny().eval())
        cls.path = os.path.join(cls.dir.name, "tiny.pt")
        cls.module.save(cls.path)
        with open(os.path.join(cls.dir.name, "tiny.json"), "w") as f:
            json.dump({"input_size": SIDE, "mean": MEAN, "std": STD, "classes": CLASSES, "name": "tiny"}, f)
        cls.gateway = Gateway()
        cls.worker = cls.gateway.start_worker("--model", cls.path, "--name", "tiny")
        cls.gateway.wait_ready()
        rng = np.random.default_rng(5)
        cls.pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        x = torch.tensor(cls.pixels, dtype=torch.float32).permute(2, 0, 1) / 255.0
        cls.x = ((x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)).unsqueeze(0)

    @classmethod
    def tearDownClass(cls):
        stop(cls.worker)
        cls.gateway.stop()
        cls.dir.cleanup()

    def test_the_gateway_describes_it(self):
        status, _, body = http("GET", self.gateway.url + "/v1/model")
        self.assertEqual(status, 200)
        model = json.loads(body)
        self.assertEqual(model["family"], "torchscript")
        self.assertEqual(model["variant"], "tiny")
        self.assertEqual(model["classes"], CLASSES)
        self.assertEqual(model["input_size"], SIDE)
        np.testing.assert_allclose(model["normalization"]["std"], STD, rtol=1e-6)

    def test_ig_by_class_name_equals_autograd_on_the_scripted_module(self):
        out = io.BytesIO()
        Image.fromarray(self.pixels).save(out, format="PNG")
        status, headers, body = http("POST", self.gateway.url + "/v1/attributions?target=plum&n_steps=20&format=gzip",
                                     out.getvalue(), {"Content-Type": "image/png"})
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(headers["X-Target-Name"], "plum")
        result = torch.load(io.BytesIO(gzip.decompress(body)))
        self.assertEqual(int(result["target_class"]), 2)
        expected = captum_style_ig(self.module, self.x, 2, 20)
        torch.testing.assert_close(result["integrated_grads"].float(), expected, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(result["output"], self.module(self.x).detach(), rtol=1e-5, atol=1e-6)

    def test_the_original_route_takes_its_class_names(self):
        body = json.dumps({"img_data": self.pixels.tolist(), "target_class": "kiwi", "n_steps": 10}).encode()
        status, _, payload = http("POST", self.gateway.url + "/model/", body, {"Content-Type": "application/json"})
        self.assertEqual(status, 200, payload[:300])
        self.assertEqual(int(torch.load(io.BytesIO(gzip.decompress(payload)))["target_class"]), 4)
        status, _, payload = http("POST", self.gateway.url + "/model/",
                                  json.dumps({"img_data": self.pixels.tolist(), "target_class": "cat"}).encode(),
                                  {"Content-Type": "application/json"})
        self.assertEqual(status, 422, payload)

    def test_the_offline_command_serves_it_too(self):
        request = os.path.join(self.dir.name, "request.json")
        output = os.path.join(self.dir.name, "out.gzip")
        with open(request, "w") as f:
            json.dump({"img_data": self.pixels.tolist(), "target_class": "fig"}, f)
        run = subprocess.run([os.path.join(BIN, "intgrads-images"), "attribute", "--model", self.path, "--input",
                              request, "--output", output, "--n-steps", "12"], capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stderr)
        with open(output, "rb") as f:
            result = torch.load(io.BytesIO(gzip.decompress(f.read())))
        torch.testing.assert_close(result["integrated_grads"].float(), captum_style_ig(self.module, self.x, 3, 12),
                                   rtol=1e-4, atol=1e-6)
        # Several classes: one file each, named after the class.
        run = subprocess.run([os.path.join(BIN, "intgrads-images"), "attribute", "--model", self.path, "--input",
                              request, "--output", output, "--n-steps", "12", "--target", "kiwi,apple"],
                             capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stderr)
        for index, name in ((4, "kiwi"), (0, "apple")):
            with open(os.path.join(self.dir.name, f"out-{name}.gzip"), "rb") as f:
                result = torch.load(io.BytesIO(gzip.decompress(f.read())))
            self.assertEqual(int(result["target_class"]), index)
            torch.testing.assert_close(result["integrated_grads"].float(), captum_style_ig(self.module, self.x, index, 12),
                                       rtol=1e-4, atol=1e-6)

    def test_a_worker_refuses_a_model_without_its_sidecar(self):
        bare = os.path.join(self.dir.name, "bare.pt")
        self.module.save(bare)
        run = subprocess.run([os.path.join(BIN, "intgrads-worker"), "--model", bare, *worker_key_flags()],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 2)
        self.assertIn("no sidecar", run.stderr)


if __name__ == "__main__":
    unittest.main()
