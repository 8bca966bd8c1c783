"""End to end: the embedded default model (served with no model flag, read by
torch.load), and `intgrads-images train` and `evaluate` on the labelled
fixture images of make_fixtures.py. The accuracy `evaluate` prints is checked
against the logits that `intgrads-images attribute` returns for each image."""

import gzip
import io
import json
import os
import resource
import signal
import subprocess
import tempfile
import unittest

import torch

import reference_models as rm
from service import BIN, SLOWDOWN, Gateway, free_port, http, stop, wait_until, worker_key_flags

FIXTURES = os.path.join(BIN, "..", "fixtures")
DEFAULT_MODEL = os.path.join(rm.REPO, "models", "default-lanet.pth")


def run(*args, timeout=300 * SLOWDOWN):
    return subprocess.run([os.path.join(BIN, "intgrads-images"), *args], capture_output=True, text=True,
                          timeout=timeout)


def fixture_images():
    """(path, class index) of the fixture folder tree."""
    root = os.path.join(FIXTURES, "dataset", "train")
    return [(os.path.join(root, name, image), rm.CIFAR10_CLASSES.index(name))
            for name in sorted(os.listdir(root)) for image in sorted(os.listdir(os.path.join(root, name)))]


def predicted_class(tmp, image, model_flags):
    request, payload = os.path.join(tmp, "request.json"), os.path.join(tmp, "answer.gzip")
    result = run("prepare", image, "cat", request)
    assert result.returncode == 0, result.stderr
    result = run("attribute", *model_flags, "--input", request, "--output", payload, "--n-steps", "1",
                 "--threads", "1")
    assert result.returncode == 0, result.stderr
    answer = torch.load(io.BytesIO(gzip.open(payload).read()), weights_only=True)
    return int(answer["output"].argmax())


class DefaultModel(unittest.TestCase):
    def test_torch_load_reads_it_as_a_lanet_state_dict(self):
        state = torch.load(DEFAULT_MODEL, weights_only=True)
        self.assertEqual(state["classifier.weight"].shape, (10, 256))  # C=16, 8 cells: 4 x 64 channels
        self.assertEqual(state["stem.0.weight"].shape, (48, 3, 3, 3))
        self.assertFalse(any(k.startswith("auxiliary_head") for k in state))
        ref = rm.reference("lanet-c16-l8")
        if ref is not None:  # the original network's keys and shapes, less the auxiliary head
            expected = [(k, shape) for k, shape, _ in ref["state_dict"] if not k.startswith("auxiliary_head")]
            self.assertEqual([(k, list(t.shape)) for k, t in state.items()], expected)
        self.assertLessEqual(os.path.getsize(DEFAULT_MODEL), 10 << 20)

    def test_the_launcher_serves_it_without_a_model_flag(self):
        port = free_port()
        process = subprocess.Popen([os.path.join(BIN, "intgrads-images"), "-h", "127.0.0.1", "-p", str(port),
                                    "--threads", "1"])
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: http("GET", url + "/readyz", timeout=2)[0] == 200, what="/readyz")
            with tempfile.TemporaryDirectory() as tmp:
                request = os.path.join(tmp, "request.json")
                self.assertEqual(run("prepare", fixture_images()[3][0], "cat", request).returncode, 0)
                status, headers, body = http("POST", url + "/model/", open(request, "rb").read())
            self.assertEqual(status, 200, body[:300])
            answer = torch.load(io.BytesIO(gzip.decompress(body)), weights_only=True)
            self.assertEqual(answer["output"].shape, (1, 10))
            self.assertEqual(answer["integrated_directional_grads"].shape, (50, 3, 32, 32))
            worker = http("GET", url + "/v1/workers")[2].decode()
            self.assertIn('"family":"lanet"', worker.replace(" ", ""))
            self.assertIn('"variant":"C16-L8"', worker.replace(" ", ""))
        finally:
            self.assertEqual(stop(process, signal.SIGINT), 0)


def vm_peak_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmPeak:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmPeak")


class ResourceFaults(unittest.TestCase):
    # AddressSanitizer reserves terabytes of address space for its shadow
    # memory, so a limit on the address space stops a sanitized worker from
    # starting at all (.ci/sanitize sets INTGRADS_SANITIZED).
    @unittest.skipIf(os.environ.get("INTGRADS_SANITIZED"), "an address-space limit and ASan cannot be combined")
    def test_an_allocation_failure_is_a_503_and_the_worker_goes_on(self):
        """A real allocation failure: the worker runs with its address space
        limited to what it needs at rest plus 768 MiB and is told to take all
        path points in one batch (--chunk-size, past its memory budget); 1024
        path points of the default model need more than that, 8 need a few
        MiB."""
        gateway = Gateway()
        self.addCleanup(gateway.stop)
        argv = [os.path.join(BIN, "intgrads-worker"), "--connect", gateway.endpoint, "--threads", "1",
                "--heartbeat-ms", "200", "--chunk-size", "1024", *worker_key_flags()]
        probe = subprocess.Popen(argv)
        wait_until(lambda: len(gateway.workers()) == 1, what="the probe worker")
        limit = vm_peak_bytes(probe.pid) + (768 << 20)
        stop(probe)
        wait_until(lambda: not gateway.workers(), what="the probe worker to leave")
        worker = subprocess.Popen(argv, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
        self.addCleanup(stop, worker)
        wait_until(lambda: len(gateway.workers()) == 1, what="the limited worker")
        pixels = [[[(x * 7) % 256, (y * 5) % 256, 128] for x in range(32)] for y in range(32)]

        def post(n_steps):
            body = json.dumps({"img_data": pixels, "target_class": "ship", "n_steps": n_steps}).encode()
            return http("POST", gateway.url + "/model/", body)

        status, headers, body = post(1024)
        self.assertEqual(status, 503, body[:300])
        self.assertIn("out of memory", json.loads(body)["error"])
        self.assertIn("Retry-After", headers)
        status, _, body = post(8)
        self.assertEqual(status, 200, body[:300])
        self.assertIsNone(worker.poll())
        # /v1/workers is a snapshot the broker publishes after each round.
        wait_until(lambda: gateway.workers()[0]["requests_served"] == 2, what="both requests counted")


class PathScan(unittest.TestCase):
    def test_scan_agrees_with_the_attribution(self):
        with tempfile.TemporaryDirectory() as tmp:
            request, payload = os.path.join(tmp, "request.json"), os.path.join(tmp, "answer.gzip")
            self.assertEqual(run("prepare", fixture_images()[6][0], "ship", request).returncode, 0)
            result = run("path-scan", "--input", request, "--points", "5", "--json", "--threads", "1")
            self.assertEqual(result.returncode, 0, result.stderr)
            scan = json.loads(result.stdout)
            result = run("attribute", "--input", request, "--output", payload, "--threads", "1")
            self.assertEqual(result.returncode, 0, result.stderr)
            delta = float(result.stdout.split("convergence delta ")[1].split(",")[0])
            answer = torch.load(io.BytesIO(gzip.open(payload).read()), weights_only=True)
        self.assertEqual(scan["target"], 8)
        self.assertEqual([p["a"] for p in scan["scan"]][:2], [0.0, 1e-6])
        self.assertAlmostEqual(scan["scan"][-1]["a"], 1.0)
        self.assertAlmostEqual(scan["f_x"], float(answer["output"][0, 8]), places=4)
        self.assertEqual(scan["scan"][0]["fraction_of_change"], 0.0)
        self.assertAlmostEqual(scan["scan"][-1]["fraction_of_change"], 1.0)
        change = scan["f_x"] - scan["f_baseline"]
        gap = scan["gap_fraction"]["gausslegendre"][scan["n_steps"].index(50)]
        self.assertAlmostEqual(gap, abs(delta) / abs(change), delta=1e-3 * max(1.0, gap))
        self.assertEqual(sorted(scan["gap_fraction"]), ["gausslegendre", "riemann_left", "riemann_middle",
                                                        "riemann_right", "riemann_trapezoid", "scan"])


class ScanMethod(unittest.TestCase):
    def test_scan_through_the_service_and_the_incompleteness_warning(self):
        """method=scan over HTTP: its per-step fields rebuild the IG, and the
        worker warns exactly for the answers whose |delta| exceeds 10% of
        |f(x) - f(baseline)| (= sum(IG) - delta)."""
        gateway = Gateway()
        self.addCleanup(gateway.stop)
        with tempfile.TemporaryFile() as log:
            worker = subprocess.Popen([os.path.join(BIN, "intgrads-worker"), "--connect", gateway.endpoint,
                                       "--threads", "1", "--heartbeat-ms", "200", *worker_key_flags()], stderr=log)
            self.addCleanup(stop, worker)
            wait_until(lambda: len(gateway.workers()) == 1, what="the worker")
            pixels = [[[(x * 7) % 256, (y * 5) % 256, (x * y) % 256] for x in range(32)] for y in range(32)]
            mean = torch.tensor([0.49139968, 0.48215827, 0.44653124]).view(3, 1, 1)
            std = torch.tensor([0.24703233, 0.24348505, 0.26158768]).view(3, 1, 1)
            x = ((torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1) / 255 - mean) / std).unsqueeze(0)
            warned = []
            for method, n_steps in (("scan", 50), ("gausslegendre", 1), ("scan", 7)):
                body = json.dumps({"img_data": pixels, "target_class": "ship", "n_steps": n_steps,
                                   "method": method}).encode()
                status, headers, payload = http("POST", gateway.url + "/model/", body)
                self.assertEqual(status, 200, payload[:300])
                answer = torch.load(io.BytesIO(gzip.decompress(payload)), weights_only=True)
                steps = answer["step_sizes"].view(-1)
                self.assertEqual(steps.numel(), n_steps)
                self.assertAlmostEqual(float(steps.double().sum()), 1.0, places=5)
                alphas = (answer["intermediates"].flatten(1) / x.flatten(1)).median(1).values
                self.assertTrue(bool((alphas[1:] > alphas[:-1]).all()), alphas)
                self.assertTrue(torch.allclose(answer["intermediates"], alphas.view(-1, 1, 1, 1) * x, atol=1e-5))
                grads = answer["integrated_directional_grads"]
                rebuilt = x * (grads * steps.view(-1, 1, 1, 1)).sum(0, keepdim=True)
                self.assertTrue(torch.allclose(rebuilt, answer["integrated_grads"], rtol=1e-4, atol=1e-6))
                delta = float(headers["X-Convergence-Delta"])
                change = float(answer["integrated_grads"].double().sum()) - delta
                warned.append(abs(delta) > 0.1 * abs(change))
            if method == "scan":
                self.assertLess(abs(delta), abs(change))
            stop(worker)
            log.seek(0)
            warnings = [line for line in log.read().decode().splitlines() if "warning: request" in line]
        self.assertEqual(len(warnings), sum(warned), warnings)
        self.assertTrue(warned[1], "one Gauss-Legendre point should leave more than 10% of the change")
        self.assertIn("method gausslegendre, n_steps 1", "\n".join(warnings))


class TrainAndEvaluate(unittest.TestCase):
    def test_train_writes_a_checkpoint_that_is_served_and_evaluated(self):
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = os.path.join(tmp, "tiny.pth")
            result = run("train", "--data", os.path.join(FIXTURES, "dataset.zip"), "--output", checkpoint,
                         "--channels", "4", "--layers", "3", "--epochs", "2", "--batch-size", "3",
                         "--validation", "3", "--threads", "1")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("epoch 2/2: loss", result.stderr)
            self.assertIn("validation accuracy", result.stderr)
            state = torch.load(checkpoint, weights_only=True)
            self.assertEqual(state["classifier.weight"].shape, (10, 64))  # C 4, doubled at cells 1 and 2: 4 x 16

            result = run("evaluate", os.path.join(FIXTURES, "dataset"), "-lb", checkpoint, "--threads", "1")
            self.assertEqual(result.returncode, 0, result.stderr)
            lines = result.stdout.strip().splitlines()
            self.assertRegex(lines[-1], r"^top1_accuracy: [01]\.\d{4}$")
            self.assertEqual([line.split()[0] for line in lines[:-1]], ["airplane", "cat", "ship"])
            self.assertTrue(all(line.endswith("(3 images)") for line in lines[:-1]))
            images = fixture_images()
            hits = sum(predicted_class(tmp, path, ("-lb", checkpoint)) == label for path, label in images)
            self.assertEqual(lines[-1], f"top1_accuracy: {hits / len(images):.4f}")

    def test_evaluate_uses_the_default_model_without_a_flag(self):
        result = run("evaluate", os.path.join(FIXTURES, "dataset.zip"), "--threads", "1")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout.strip().splitlines()[-1], r"^top1_accuracy: [01]\.\d{4}$")

    def test_clear_errors(self):
        result = run("evaluate", "/nonexistent.zip")
        self.assertEqual(result.returncode, 2)
        self.assertIn("/nonexistent.zip", result.stderr)
        result = run("train", "--output", "/tmp/x.pth")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--data", result.stderr)
        result = run("evaluate", FIXTURES + "/dataset", "-lb", "/nonexistent.pth")
        self.assertEqual(result.returncode, 2)


if __name__ == "__main__":
    unittest.main()
