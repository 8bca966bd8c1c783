"""The web page at / in headless Chromium (Debian's, driven by Playwright
from npm; tools/install-deps.sh --web installs both): upload a PNG, the
heatmap appears, the slider steps through the path; what the page shows is
checked against the API's own answer. The screenshot is left in
build/test-artifacts/web-page.png."""

import json
import os
import shutil
import subprocess
import unittest

import numpy as np
from PIL import Image

import reference_models as rm
from service import BIN, Gateway, http, stop

WEB = os.path.join(rm.REPO, "tests", "web")
ARTIFACTS = os.path.join(os.path.dirname(BIN), "test-artifacts")


class WebPage(unittest.TestCase):
    def test_openapi_document_is_valid_openapi_3_0(self):
        """gateway/web/openapi.json against the official OpenAPI 3.0 schema,
        by a maintained validator (npm @seriousme/openapi-schema-validator)."""
        node = shutil.which("node")
        self.assertIsNotNone(node, "node is missing: run tools/install-deps.sh --web")
        document = os.path.join(rm.REPO, "gateway", "web", "openapi.json")
        run = subprocess.run([node, os.path.join(WEB, "openapi_test.mjs"), document], capture_output=True, text=True,
                             timeout=120, cwd=WEB)
        self.assertEqual(run.returncode, 0, run.stdout[-3000:] + run.stderr[-3000:])
        self.assertEqual(json.loads(run.stdout), {"valid": True, "version": "3.0", "errors": []})

    def test_upload_heatmap_and_slider(self):
        node = shutil.which("node")
        self.assertIsNotNone(node, "node is missing: run tools/install-deps.sh --web")
        self.assertTrue(os.path.isdir(os.path.join(WEB, "node_modules", "playwright-core")),
                        "playwright-core is missing: run tools/install-deps.sh --web")
        gateway = Gateway()
        worker = gateway.start_worker("--chunk-size", "2")  # 32 batches: progress to show
        try:
            gateway.wait_ready()
            os.makedirs(ARTIFACTS, exist_ok=True)
            image = os.path.join(ARTIFACTS, "web-input.png")
            rng = np.random.default_rng(5)
            Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(image)
            run = subprocess.run([node, os.path.join(WEB, "page_test.js"), gateway.url, image, ARTIFACTS],
                                 capture_output=True, text=True, timeout=300, cwd=WEB)
            self.assertEqual(run.returncode, 0, run.stderr[-3000:])
            shown = json.loads(run.stdout.strip().splitlines()[-1])
            self.assertEqual(shown["probabilities"], 10)
            self.assertIn('"cat"', shown["summary"])
            # The delta the page shows is the API's for the same request.
            status, headers, _ = http("POST", gateway.url + "/v1/attributions?target=cat&n_steps=64&format=json",
                                      open(image, "rb").read(), {"Content-Type": "image/png"})
            self.assertEqual(status, 200)
            self.assertAlmostEqual(float(shown["delta"]), float(headers["X-Convergence-Delta"]),
                                   delta=1e-3 * max(1.0, abs(float(headers["X-Convergence-Delta"]))))
            screenshot = Image.open(os.path.join(ARTIFACTS, "web-page.png"))
            self.assertGreater(screenshot.size[0], 800)
        finally:
            stop(worker)
            gateway.stop()


if __name__ == "__main__":
    unittest.main()
