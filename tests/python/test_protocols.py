"""The protocols our users' serving tools speak, end to end against the real
gateway and a worker with the default model, each request and answer in the
JSON its specification shows: KServe v1 (:explain, :predict, model ready),
the Open Inference Protocol v2 (health, metadata, infer with BYTES and FP32
inputs, the attribution extension), TorchServe (curl -T and -F data=@ as its
docs show them, /ping). Every number is checked against /v1's answer for the
same image."""

import base64
import io
import json
import os
import subprocess
import tempfile
import unittest
import unittest.mock

import numpy as np
from PIL import Image

from service import Gateway, http, stop

STEPS = 8
GATEWAY = None
WORKER = None


def setUpModule():
    global GATEWAY, WORKER
    GATEWAY = Gateway()
    WORKER = GATEWAY.start_worker()
    GATEWAY.wait_ready()


def tearDownModule():
    stop(WORKER)
    GATEWAY.stop()


def png(seed, height=40, width=50):
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def b64(data):
    return base64.b64encode(data).decode()


def post_json(path, doc):
    status, headers, body = http("POST", GATEWAY.url + path, json.dumps(doc).encode(),
                                 {"Content-Type": "application/json"})
    return status, headers, json.loads(body)


def v1(image, query):
    """/v1's JSON answer for one image."""
    status, _, body = http("POST", GATEWAY.url + "/v1/attributions?format=json&" + query, image,
                           {"Content-Type": "image/png"})
    assert status == 200, body[:300]
    return json.loads(body)


def curl(*args):
    run = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True, timeout=120)
    body, _, code = run.stdout.rpartition(b"\n")
    return int(code), body


class KServeV1(unittest.TestCase):
    def test_model_ready(self):
        status, _, body = http("GET", GATEWAY.url + "/v1/models/default")
        self.assertEqual(status, 200)
        doc = json.loads(body)
        self.assertEqual((doc["name"], doc["ready"]), ("default", True))

    def test_explain_answers_predictions_and_explanations_per_instance(self):
        first, second = png(1), png(2)
        status, _, doc = post_json("/v1/models/default:explain", {
            "instances": [{"image_bytes": {"b64": b64(first)}}, {"b64": b64(second), "target": "dog"}],
            "parameters": {"n_steps": STEPS, "target": "cat"}})
        self.assertEqual(status, 200, doc)
        self.assertEqual(sorted(doc), ["explanations", "predictions"])
        self.assertEqual(len(doc["predictions"]), 2)
        self.assertEqual(len(doc["explanations"]), 2)
        for image, explanation, prediction, target in ((first, doc["explanations"][0], doc["predictions"][0], "cat"),
                                                       (second, doc["explanations"][1], doc["predictions"][1], "dog")):
            expected = v1(image, f"target={target}&n_steps={STEPS}")
            self.assertEqual(explanation["target_name"], target)
            np.testing.assert_array_equal(explanation["integrated_grads"], expected["integrated_grads"])
            np.testing.assert_allclose(prediction, expected["probabilities"], rtol=1e-6)

    def test_predict_is_the_class_probabilities(self):
        image = png(3)
        status, _, doc = post_json("/v1/models/default:predict", {"instances": [b64(image)]})
        self.assertEqual(status, 200, doc)
        self.assertEqual(list(doc), ["predictions"])
        expected = v1(image, "n_steps=2")
        np.testing.assert_allclose(doc["predictions"][0], expected["probabilities"], rtol=1e-5)
        self.assertAlmostEqual(sum(doc["predictions"][0]), 1.0, places=9)

    def test_mistakes_are_json_errors(self):
        status, _, doc = post_json("/v1/models/nothing:explain", {"instances": [b64(png(1))]})
        self.assertEqual(status, 404)
        self.assertIn("nothing", doc["error"])
        status, _, doc = post_json("/v1/models/default:explain", {"instances": [{"pixels": 1}]})
        self.assertEqual(status, 422)
        self.assertIn("instances[0]", doc["error"])
        status, _, body = http("POST", GATEWAY.url + "/v1/models/default:explain", b"not json",
                               {"Content-Type": "application/json"})
        self.assertEqual(status, 400, body)


class OpenInferenceV2(unittest.TestCase):
    def test_health_and_metadata(self):
        self.assertEqual(json.loads(http("GET", GATEWAY.url + "/v2/health/live")[2]), {"live": True})
        self.assertEqual(json.loads(http("GET", GATEWAY.url + "/v2/health/ready")[2]), {"ready": True})
        self.assertEqual(json.loads(http("GET", GATEWAY.url + "/v2/models/default/ready")[2]),
                         {"name": "default", "ready": True})
        status, _, body = http("GET", GATEWAY.url + "/v2/models/other/ready")
        self.assertEqual(status, 400)  # not ready: a 4xx, as the protocol says
        self.assertFalse(json.loads(body)["ready"])
        server = json.loads(http("GET", GATEWAY.url + "/v2")[2])
        self.assertEqual((server["name"], server["extensions"]), ("intgrads-images", ["attribution"]))
        model = json.loads(http("GET", GATEWAY.url + "/v2/models/default")[2])
        self.assertEqual(model["name"], "default")
        self.assertEqual(model["inputs"], [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                                           {"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}])
        self.assertEqual(model["outputs"][0], {"name": "logits", "datatype": "FP32", "shape": [-1, 10]})
        self.assertEqual(http("GET", GATEWAY.url + "/v2/models/other")[0], 404)

    def test_infer_images_and_the_same_tensors(self):
        first, second = png(4), png(5, 32, 32)
        status, _, doc = post_json("/v2/models/default/infer", {
            "id": "42", "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                                    "data": [b64(first), b64(second)]}]})
        self.assertEqual(status, 200, doc)
        self.assertEqual((doc["model_name"], doc["id"]), ("default", "42"))
        outputs = {o["name"]: o for o in doc["outputs"]}
        self.assertEqual(sorted(outputs), ["logits", "predicted_class", "probabilities"])
        self.assertEqual((outputs["logits"]["datatype"], outputs["logits"]["shape"]), ("FP32", [2, 10]))
        logits = np.array(outputs["logits"]["data"]).reshape(2, 10)
        expected = [v1(image, "n_steps=2") for image in (first, second)]
        for i in range(2):
            np.testing.assert_allclose(logits[i], expected[i]["output"][0], rtol=1e-4, atol=1e-5)
        self.assertEqual(outputs["predicted_class"]["data"], [e["predicted_class"] for e in expected])
        # FP32: the model's normalized input itself, as /v1's JSON answer shows it.
        tensor = np.array([e["input"][0] for e in expected], dtype=np.float32)
        status, _, doc = post_json("/v2/models/default/infer", {
            "inputs": [{"name": "input", "shape": list(tensor.shape), "datatype": "FP32",
                        "data": tensor.ravel().tolist()}]})
        self.assertEqual(status, 200, doc)
        again = np.array({o["name"]: o for o in doc["outputs"]}["logits"]["data"]).reshape(2, 10)
        np.testing.assert_allclose(again, logits, rtol=1e-5, atol=1e-6)

    def test_the_attribution_extension(self):
        image = png(6)
        expected = v1(image, f"target=cat&n_steps={STEPS}")
        status, _, doc = post_json("/v2/models/default/infer", {
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(image)]}],
            "parameters": {"explain": True, "target": "cat", "n_steps": STEPS}})
        self.assertEqual(status, 200, doc)
        outputs = {o["name"]: o for o in doc["outputs"]}
        self.assertEqual(outputs["integrated_grads"]["shape"], [1, 3, 32, 32])
        np.testing.assert_array_equal(np.array(outputs["integrated_grads"]["data"], dtype=np.float32),
                                      np.array(expected["integrated_grads"], dtype=np.float32).ravel())
        self.assertEqual(outputs["integrated_directional_grads"]["shape"], [1, STEPS, 3, 32, 32])
        self.assertEqual(outputs["step_sizes"]["shape"], [1, STEPS, 1])
        self.assertEqual(outputs["target_class"]["data"], [3])
        self.assertAlmostEqual(outputs["convergence_delta"]["data"][0], expected["convergence_delta"], places=5)
        # Asking for an attribution output is asking for the attribution; only what is asked comes back.
        status, _, doc = post_json("/v2/models/default/infer", {
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(image)]}],
            "parameters": {"target": "cat", "n_steps": STEPS}, "outputs": [{"name": "integrated_grads"}]})
        self.assertEqual(status, 200, doc)
        self.assertEqual([o["name"] for o in doc["outputs"]], ["integrated_grads"])

    def test_mistakes_are_errors_the_protocol_shows(self):
        for doc, code, named in (
                ({"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1]}]}, 422, "INT8"),
                ({"inputs": [{"name": "x", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0.0]}]}, 422,
                 "[N, 3, 32, 32]"),
                ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [b64(b"not an image")]}]},
                 422, "input 0")):
            status, _, answer = post_json("/v2/models/default/infer", doc)
            self.assertEqual(status, code, answer)
            self.assertIn(named, answer["error"])
        status, _, answer = post_json("/v2/models/other/infer", {"inputs": []})
        self.assertEqual(status, 404, answer)


class TorchServe(unittest.TestCase):
    def test_ping(self):
        self.assertEqual(json.loads(http("GET", GATEWAY.url + "/ping")[2]), {"status": "Healthy"})

    def test_curl_as_its_docs_show(self):
        image = png(7)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "kitten.png")
            with open(path, "wb") as f:
                f.write(image)
            status, body = curl(GATEWAY.url + "/predictions/default", "-T", path)  # a PUT, no Content-Type
            self.assertEqual(status, 200, body)
            top = json.loads(body)
            expected = v1(image, "n_steps=2")
            self.assertEqual(len(top), 5)
            self.assertEqual(list(top)[0], expected["predicted_name"])
            self.assertEqual(list(top.values()), sorted(top.values(), reverse=True))
            self.assertEqual(json.loads(curl(GATEWAY.url + "/predictions/default", "-F", f"data=@{path}")[1]), top)
            status, body = curl("-X", "POST", GATEWAY.url + f"/explanations/default?n_steps={STEPS}", "-T", path)
            self.assertEqual(status, 200, body)
            explanation = np.array(json.loads(body), dtype=np.float32)
            self.assertEqual(explanation.shape, (3, 32, 32))
            expected = v1(image, f"n_steps={STEPS}")
            np.testing.assert_array_equal(explanation, np.array(expected["integrated_grads"][0], dtype=np.float32))


class TokenAndNoWorker(unittest.TestCase):
    def test_health_stays_open_and_says_not_ready(self):
        with Gateway("--token", "s3cret") as gateway:
            self.assertEqual(http("GET", gateway.url + "/v2/health/live")[0], 200)
            self.assertEqual(http("GET", gateway.url + "/v2/health/ready")[0], 400)
            self.assertEqual(http("GET", gateway.url + "/v2/models/default/ready")[0], 400)
            self.assertEqual(http("GET", gateway.url + "/ping"), (500, unittest.mock.ANY, b'{"status":"Unhealthy"}'))
            for method, path in (("GET", "/v2"), ("GET", "/v2/models/default"), ("POST", "/v2/models/default/infer"),
                                 ("POST", "/v1/models/default:explain"), ("PUT", "/predictions/default")):
                self.assertEqual(http(method, gateway.url + path, b"{}" if method != "GET" else None)[0], 401, path)


if __name__ == "__main__":
    unittest.main()
