"""The offline `attribute` command against real PyTorch: its gzip payload is
read with the original README's snippet and with torch.load(weights_only=True),
and every field is checked against an independent computation and against
Captum's IG in ../shared/spec/reference."""

import json
import os
import subprocess
import tempfile
import unittest

import numpy as np
import torch
from PIL import Image

import reference_models as rm

BIN = os.environ.get("INTGRADS_BIN", os.path.join(rm.REPO, "build", "bin"))
# The original server's keys in its order (measured by running it), and its dtypes.
KEYS = ["integrated_directional_grads", "step_sizes", "intermediates", "integrated_grads", "output", "target_class"]
FLOAT64 = ("step_sizes", "integrated_grads")


def attribute(checkpoint, family, request, output, *extra):
    flag = "--bit-path" if family == "bit" else "--lanet-path"
    result = subprocess.run([os.path.join(BIN, "intgrads-images"), "attribute", flag, checkpoint, "--input", request,
                             "--output", output, "--threads", "2", *extra],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(result.stderr)
    return result.stdout


class AttributeOracle(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def check_reference(self, name, legacy):
        ref = rm.reference(name)
        if ref is None:
            self.skipTest(f"{name}.json missing")
        checkpoint = os.path.join(self.dir, "model.pth")
        rm.write_checkpoint(ref, checkpoint, legacy=legacy)
        request = os.path.join(self.dir, "input_json_file.json")
        rm.write_request(ref, request)
        output = os.path.join(self.dir, "saved_file.gzip")
        attribute(checkpoint, ref["family"], request, output)

        d = rm.load_gzip_dict(output)  # the README's reader
        self.assertEqual(list(d.keys()), KEYS)
        import gzip
        from io import BytesIO
        with gzip.open(output, "rb") as f:
            safe = torch.load(BytesIO(f.read()), weights_only=True)  # what current PyTorch does by default
        for key in KEYS[:-1]:
            self.assertTrue(torch.equal(safe[key], d[key]))
            self.assertEqual(d[key].dtype, torch.float64 if key in FLOAT64 else torch.float32, key)
            self.assertFalse(d[key].requires_grad, key)  # the original's True broke .numpy()
        self.assertEqual(d["target_class"], 3)
        self.assertIsInstance(d["target_class"], int)

        n = 50
        nodes, weights = np.polynomial.legendre.leggauss(n)
        alphas = 0.5 * (1 + nodes)
        # Gauss-Legendre's weights in float64, as numpy's to the last bits or so (ours come by Newton's method).
        torch.testing.assert_close(d["step_sizes"], torch.tensor(0.5 * weights, dtype=torch.float64).view(n, 1),
                                   rtol=1e-12, atol=1e-14)
        x = rm.normalized_input(ref)
        expected_points = torch.cat([0 + float(a) * (x - 0) for a in alphas])  # Captum's own expression
        self.assertTrue(torch.equal(d["intermediates"], expected_points))
        self.assertEqual(tuple(d["integrated_directional_grads"].shape), (n, 3, 32, 32))
        np.testing.assert_allclose(d["output"][0].numpy(), ref["expected_logits_eval"], rtol=1e-4, atol=1e-5)
        # IG is formed from the returned per-step gradients: one pass, not two.
        rebuilt = x * (d["integrated_directional_grads"] * d["step_sizes"].float().view(n, 1, 1, 1)).sum(0, keepdim=True)
        torch.testing.assert_close(d["integrated_grads"].float(), rebuilt, rtol=1e-5, atol=1e-7)
        captum = torch.tensor(ref["expected_integrated_grads"]["integrated_grads_chw"]).unsqueeze(0)
        largest = captum.abs().max().item()
        # 1e-3 as the reference README expects; LaNet-C16-L8 is float32-fragile (see
        # tests/worker/reference_test.cc): our own batch-1 and batch-50 runs differ by 8e-3, Captum's float32
        # IG differs from float64 by 1.2e-2.
        tolerance = 1e-3 if ref["family"] == "bit" else 1.5e-2
        self.assertLess((d["integrated_grads"] - captum).abs().max().item(), tolerance * largest)

    def test_lanet_training_checkpoint_zip(self):
        self.check_reference("lanet-c16-l8", legacy=False)

    def test_lanet_training_checkpoint_legacy(self):
        self.check_reference("lanet-c16-l8", legacy=True)

    def test_bit_data_parallel_zip(self):
        self.check_reference("bit-m-r50x1", legacy=False)

    def test_bit_data_parallel_legacy(self):
        self.check_reference("bit-m-r50x1", legacy=True)

    def test_riemann_trapezoid_as_captum(self):
        ref = rm.reference("lanet-c16-l8")
        if ref is None:
            self.skipTest("reference missing")
        checkpoint = os.path.join(self.dir, "model.pth")
        rm.write_checkpoint(ref, checkpoint)
        request = os.path.join(self.dir, "in.json")
        rm.write_request(ref, request, target_class="dog")
        output = os.path.join(self.dir, "out.gzip")
        attribute(checkpoint, "lanet", request, output, "--n-steps", "10", "--method", "riemann_trapezoid")
        d = rm.load_gzip_dict(output)
        steps = [1 / 10] * 10
        steps[0] /= 2
        steps[-1] /= 2
        self.assertTrue(torch.equal(d["step_sizes"], torch.tensor(steps, dtype=torch.float64).view(10, 1)))
        x = rm.normalized_input(ref)
        points = torch.cat([float(a) * x for a in torch.linspace(0, 1, 10).tolist()])
        self.assertTrue(torch.equal(d["intermediates"], points))
        self.assertEqual(d["target_class"], 5)


class Prepare(unittest.TestCase):
    """prepare_input.py and `intgrads-images prepare` write the same body."""

    def test_rgb_grey_rgba_and_palette(self):
        with tempfile.TemporaryDirectory() as tmp:
            rng = np.random.default_rng(1)
            rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
            images = {
                "rgb.png": Image.fromarray(rgb),
                "grey.png": Image.fromarray(rgb[..., 0]),
                "rgba.png": Image.fromarray(np.dstack([rgb, rgb[..., :1]])),
                "palette.png": Image.fromarray(rgb).convert("P"),
                "photo.jpg": Image.fromarray(rgb),
            }
            for name, image in images.items():
                path = os.path.join(tmp, name)
                image.save(path)
                ours = os.path.join(tmp, name + ".cpp.json")
                theirs = os.path.join(tmp, name + ".py.json")
                subprocess.run([os.path.join(BIN, "intgrads-images"), "prepare", path, "cat", ours], check=True)
                subprocess.run(["/usr/bin/python3", os.path.join(rm.REPO, "prepare_input.py"), path, "cat", theirs],
                               check=True)
                with open(ours) as f1, open(theirs) as f2:
                    a, b = json.load(f1), json.load(f2)
                self.assertEqual(a["target_class"], "cat")
                self.assertEqual(np.asarray(a["img_data"]).shape, (9, 7, 3), name)
                if name.endswith(".png"):
                    self.assertEqual(a, b, name)
                else:  # JPEG decoders may differ by a grey level (libjpeg vs Pillow's build)
                    diff = np.abs(np.asarray(a["img_data"]) - np.asarray(b["img_data"]))
                    self.assertLessEqual(diff.max(), 2, name)


if __name__ == "__main__":
    unittest.main()
