"""The /v1 API end to end: the real gateway and a worker with the default
model on 127.0.0.1; every format decoded by a real client (torch.load,
numpy.load, json, Pillow, zipfile); the OpenAPI document against the live
routes; /metrics; and the Python client in clients/python."""

import base64
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import unittest
import zipfile

import numpy as np
import torch
from PIL import Image

import reference_models as rm
from service import BIN, Gateway, http, stop

sys.path.insert(0, os.path.join(rm.REPO, "clients", "python"))  # the package, as in the repository
import intgrads_client  # noqa: E402

STEPS = "8"
GATEWAY = None
WORKER = None


def setUpModule():
    global GATEWAY, WORKER
    GATEWAY = Gateway("--max-images", "4")
    WORKER = GATEWAY.start_worker()
    GATEWAY.wait_ready()


def tearDownModule():
    stop(WORKER)
    GATEWAY.stop()


def picture(seed, height=40, width=50):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def png(array):
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def jpeg(array):
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=95)
    return out.getvalue()


def multipart(fields):
    """(content type, body) of [(name, filename or None, bytes)]."""
    boundary = "intgrads-test-boundary"
    body = b""
    for name, filename, data in fields:
        body += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"".encode()
        if filename:
            body += f"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream".encode()
        body += b"\r\n\r\n" + data + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


def post(path="/v1/attributions", body=b"", content_type="image/png", accept=None, query=""):
    headers = {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    return http("POST", GATEWAY.url + path + query, body, headers)


def npz(body):
    with np.load(io.BytesIO(body)) as archive:
        return {k: archive[k] for k in archive.files}


class Formats(unittest.TestCase):
    def test_every_format_carries_the_same_attribution(self):
        image = picture(1)
        query = f"?target=cat&n_steps={STEPS}"
        status, headers, body = post(body=png(image), query=query + "&format=gzip")
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(headers["Content-Type"], "application/gzip")
        original = torch.load(io.BytesIO(gzip.decompress(body)), weights_only=True)
        self.assertEqual(original["target_class"], 3)
        self.assertEqual(headers["X-Target-Name"], "cat")

        status, headers, body = post(body=png(image), query=query, accept="application/x-npz")
        self.assertEqual((status, headers["Content-Type"]), (200, "application/x-npz"), body[:300])
        arrays = npz(body)
        for key in ("integrated_grads", "integrated_directional_grads", "step_sizes", "intermediates", "output"):
            self.assertEqual(arrays[key].dtype, np.float32, key)  # the gzip dict's IG and steps: float64
            np.testing.assert_array_equal(arrays[key], original[key].float().numpy(), err_msg=key)
        self.assertEqual(int(arrays["target_class"]), 3)
        np.testing.assert_allclose(arrays["probabilities"], torch.softmax(original["output"][0].double(), 0),
                                   rtol=1e-12)
        self.assertAlmostEqual(float(arrays["convergence_delta"]), float(headers["X-Convergence-Delta"]), places=6)

        status, headers, body = post(body=png(image), query=query + "&format=json")
        self.assertEqual((status, headers["Content-Type"]), (200, "application/json"))
        doc = json.loads(body)
        for key in ("integrated_grads", "integrated_directional_grads", "step_sizes", "intermediates", "output"):
            np.testing.assert_array_equal(np.array(doc[key], dtype=np.float32), arrays[key], err_msg=key)
        self.assertEqual((doc["target_name"], doc["n_steps"], len(doc["classes"])), ("cat", int(STEPS), 10))
        # JSON's size cost, as docs/API.md states it: several times the gzip.
        self.assertGreater(len(body), 4 * len(gzip.compress(gzip.decompress(post(body=png(image), query=query)[2]))))

        status, headers, body = post(body=png(image), query=query, accept="image/png")
        self.assertEqual((status, headers["Content-Type"]), (200, "image/png"))
        heatmap = Image.open(io.BytesIO(body))
        self.assertEqual(heatmap.mode, "RGB")
        self.assertEqual(heatmap.size[0], 32 * 8 + 8)

    def test_v1_equals_the_original_route_on_the_same_pixels(self):
        image = picture(2, 32, 32)
        body = json.dumps({"img_data": image.tolist(), "target_class": "dog", "n_steps": int(STEPS)}).encode()
        status, _, original = http("POST", GATEWAY.url + "/model/", body)
        self.assertEqual(status, 200)
        status, _, v1 = post(body=png(image), query=f"?target=dog&n_steps={STEPS}")
        self.assertEqual(status, 200)
        a = torch.load(io.BytesIO(gzip.decompress(original)), weights_only=True)
        b = torch.load(io.BytesIO(gzip.decompress(v1)), weights_only=True)
        torch.testing.assert_close(a["integrated_grads"], b["integrated_grads"], rtol=0, atol=0)

    def test_predicted_target_is_the_top_class(self):
        status, headers, body = post(body=jpeg(picture(3)), content_type="image/jpeg", accept="application/x-npz",
                                     query=f"?n_steps={STEPS}")
        self.assertEqual(status, 200, body[:300])
        arrays = npz(body)
        self.assertEqual(int(arrays["target_class"]), int(arrays["output"].argmax()))
        self.assertEqual(headers["X-Target-Class"], headers["X-Predicted-Class"])


def captum_blended_heat_map(ig, rgb, sign, outlier_perc):
    """Captum's visualize_image_attr(method="blended_heat_map") pixel by
    pixel, as its code does it (_normalize_attr, its colour map for the
    sign, the input's channel mean under it in matplotlib's gray at alpha
    0.5), with matplotlib's own colour maps: uint8 H x W x 3."""
    from matplotlib import colormaps
    from matplotlib.colors import LinearSegmentedColormap

    attr = ig.sum(axis=0).astype(np.float64)  # Captum sums over channels (reduction_axis=2 of H x W x C)

    def threshold(values, percentile):
        ordered = np.sort(values.flatten())
        sums = np.cumsum(ordered)
        return ordered[np.where(sums >= sums[-1] * 0.01 * percentile)[0][0]]

    if sign == "all":
        norm = attr / threshold(np.abs(attr), 100 - outlier_perc)
        cmap, position = LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"]), None
    elif sign == "positive":
        kept = (attr > 0) * attr
        norm, cmap = kept / threshold(kept, 100 - outlier_perc), colormaps["Greens"]
    elif sign == "negative":
        kept = (attr < 0) * attr
        norm, cmap = kept / (-threshold(np.abs(kept), 100 - outlier_perc)), colormaps["Reds"]
    else:
        kept = np.abs(attr)
        norm, cmap = kept / threshold(kept, 100 - outlier_perc), colormaps["Blues"]
    norm = np.clip(norm, -1, 1)
    position = (norm + 1) / 2 if sign == "all" else norm
    colour = cmap(position)[..., :3]
    mean = rgb.astype(np.float64).mean(axis=2)
    grey = colormaps["gray"]((mean - mean.min()) / (mean.max() - mean.min()))[..., :3]
    return np.rint(255 * (0.5 * colour + 0.5 * grey)).astype(np.uint8)


class CaptumHeatmap(unittest.TestCase):
    def test_sign_and_outlier_perc_draw_as_captum(self):
        image = png(picture(7, 32, 32))
        query = f"?target=cat&n_steps={STEPS}"
        status, _, body = post(body=image, query=query + "&format=json")
        self.assertEqual(status, 200, body[:300])
        doc = json.loads(body)
        ig = np.array(doc["integrated_grads"][0], dtype=np.float32)
        rgb = np.array(Image.open(io.BytesIO(image)).convert("RGB"))  # 32 x 32: the model's input as it is
        for sign, perc in (("all", 2), ("positive", 2), ("negative", 5), ("absolute_value", 0)):
            status, headers, body = post(body=image, query=query + f"&format=png&sign={sign}&outlier_perc={perc}")
            self.assertEqual((status, headers["Content-Type"]), (200, "image/png"), body[:300])
            drawn = np.array(Image.open(io.BytesIO(body)).convert("RGB"))
            zoom, margin = 8, 4
            panel = drawn[margin + zoom // 2:margin + 32 * zoom:zoom, margin + zoom // 2:margin + 32 * zoom:zoom]
            expected = captum_blended_heat_map(ig, rgb, sign, perc)
            # Half-way blends round half up here, half to even in numpy: one level apart at most.
            off = np.abs(panel.astype(int) - expected.astype(int)).max(axis=2)
            self.assertLessEqual(off.max(), 1, sign)
        # Our look is still the default; the two do not mix; outlier_perc goes with a sign.
        for bad, named in (("&sign=both", "sign"), ("&heatmap=absolute&sign=all", "heatmap"),
                           ("&outlier_perc=2", "outlier_perc"), ("&sign=all&outlier_perc=100", "outlier_perc")):
            status, _, body = post(body=image, query=query + "&format=png" + bad)
            self.assertEqual(status, 422, bad)
            self.assertIn(named, json.loads(body)["error"])


class Shapes(unittest.TestCase):
    def test_multipart_batch_comes_back_as_a_zip_with_a_summary(self):
        content_type, body = multipart([("image", "first cat.png", png(picture(4))),
                                        ("image", "b.jpg", jpeg(picture(5, 20, 30))),
                                        ("target", None, b"cat"), ("target", None, b"predicted"),
                                        ("n_steps", None, STEPS.encode()), ("format", None, b"npz")])
        status, headers, answer = post(body=body, content_type=content_type)
        self.assertEqual((status, headers["Content-Type"]), (200, "application/zip"), answer[:300])
        with zipfile.ZipFile(io.BytesIO(answer)) as archive:
            self.assertEqual(sorted(archive.namelist()), ["000-first_cat.npz", "001-b.npz", "summary.json"])
            summary = json.loads(archive.read("summary.json"))
            first, second = (npz(archive.read(s["file"])) for s in summary)
        self.assertEqual([s["target_name"] for s in summary][0], "cat")
        self.assertEqual(int(first["target_class"]), 3)
        self.assertEqual(int(second["target_class"]), int(second["output"].argmax()))
        self.assertEqual(summary[1]["predicted_class"], int(second["output"].argmax()))
        self.assertEqual(first["integrated_directional_grads"].shape, (int(STEPS), 3, 32, 32))

    def test_json_inputs_with_base64_and_img_data(self):
        body = json.dumps({"inputs": [{"image": intgrads_client._b64(png(picture(6))), "target": 1},
                                      {"img_data": picture(7, 8, 8).tolist(), "target": "truck"}],
                           "n_steps": int(STEPS), "method": "riemann_trapezoid", "format": "json"}).encode()
        status, _, answer = post(body=body, content_type="application/json")
        self.assertEqual(status, 200, answer[:300])
        doc = json.loads(answer)
        self.assertEqual([r["target_name"] for r in doc["results"]], ["automobile", "truck"])
        self.assertEqual([s["target_class"] for s in doc["summary"]], [1, 9])
        self.assertEqual(doc["results"][0]["method"], "riemann_trapezoid")

    def test_mistakes_get_4xx_naming_the_field(self):
        content_type, two_one = multipart([("image", "a.png", png(picture(8))), ("image", "b.png", png(picture(9))),
                                           ("target", None, b"cat")])
        five = json.dumps({"inputs": [{"img_data": [[1]]}] * 5}).encode()
        cases = [
            (post(body=png(picture(1)), accept="text/csv"), 406, "offered"),
            (post(body=png(picture(1)), query="?format=npz", accept="image/png"), 406, "Accept"),
            (post(body=png(picture(1)), query="?target=zebra"), 422, "unknown class 'zebra'"),
            (post(body=png(picture(1)), query="?target=10"), 422, "outside"),
            (post(body=png(picture(1)), query="?colour=red"), 422, "unknown parameter"),
            (post(body=png(picture(1))[:60]), 422, "PNG"),
            (post(body=b"hello", content_type="text/plain"), 422, "Content-Type"),
            (post(body=two_one, content_type=content_type), 422, "one target per image"),
            (post(body=five, content_type="application/json"), 413, "--max-images"),
            (post(body=png(np.zeros((1, 5000, 3), np.uint8))), 413, "--max-image-side"),
            (post(path="/v1/models/nope/attributions", body=png(picture(1))), 404, "nope"),
        ]
        for (status, _, body), expected, words in cases:
            self.assertEqual(status, expected, body[:300])
            self.assertIn(words, json.loads(body)["error"])


def rebuilt_ig(arrays):
    """IG from the per-step fields: the sum over rows of step x gradient x (x_p - b_p)."""
    paths = arrays["path_inputs"].shape[0] if "path_inputs" in arrays else 1
    rows = arrays["integrated_directional_grads"].shape[0]
    n = rows // paths
    total = np.zeros(arrays["integrated_grads"].shape[1:], np.float64)
    for r in range(rows):
        p = r // n
        difference = (arrays["path_inputs"][p] - arrays["path_baselines"][p]) if paths > 1 or "path_inputs" in arrays \
            else arrays["input"][0]
        total += float(arrays["step_sizes"][r, 0]) * arrays["integrated_directional_grads"][r] * difference
    return total[None]


class Options(unittest.TestCase):
    """The options beyond the original through the service (their mathematics:
    tests/worker/engine_test.cc, Paths.*)."""

    def attribute(self, query, body=None, content_type="image/png"):
        status, headers, answer = post(body=body or png(picture(20)), content_type=content_type,
                                       query=f"?target=cat&n_steps={STEPS}&format=npz&" + query)
        self.assertEqual(status, 200, answer[:300])
        return headers, npz(answer)

    def test_black_baseline(self):
        headers, arrays = self.attribute("baseline=black")
        info = json.loads(http("GET", GATEWAY.url + "/v1/model")[2])
        black = (0 - np.array(info["normalization"]["mean"])) / np.array(info["normalization"]["std"])
        np.testing.assert_allclose(arrays["path_baselines"][0, :, 5, 7], black, rtol=1e-5)
        np.testing.assert_allclose(arrays["intermediates"][0], arrays["path_baselines"][0] + (
            arrays["path_inputs"][0] - arrays["path_baselines"][0]) * (arrays["intermediates"][0] - arrays[
                "path_baselines"][0]).sum() / (arrays["path_inputs"][0] - arrays["path_baselines"][0]).sum(),
            rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(rebuilt_ig(arrays), arrays["integrated_grads"], rtol=1e-4, atol=1e-6)
        # The gzip dict carries the same paths for torch.load.
        status, _, body = post(body=png(picture(20)), query=f"?target=cat&n_steps={STEPS}&baseline=black")
        d = torch.load(io.BytesIO(gzip.decompress(body)), weights_only=True)
        np.testing.assert_array_equal(d["path_baselines"].numpy(), arrays["path_baselines"])

    def test_smoothgrad_is_seeded_and_rebuilds(self):
        _, arrays = self.attribute("smoothgrad_samples=3&smoothgrad_sigma=0.1&seed=4")
        self.assertEqual(arrays["integrated_directional_grads"].shape, (3 * int(STEPS), 3, 32, 32))
        self.assertEqual(arrays["path_inputs"].shape, (3, 3, 32, 32))
        self.assertAlmostEqual(float(arrays["step_sizes"].sum()), 1.0, places=5)
        np.testing.assert_allclose(rebuilt_ig(arrays), arrays["integrated_grads"], rtol=1e-4, atol=1e-6)
        _, again = self.attribute("smoothgrad_samples=3&smoothgrad_sigma=0.1&seed=4")
        np.testing.assert_array_equal(again["integrated_grads"], arrays["integrated_grads"])
        _, other = self.attribute("smoothgrad_samples=3&smoothgrad_sigma=0.1&seed=5")
        self.assertFalse(np.array_equal(other["integrated_grads"], arrays["integrated_grads"]))

    def test_adaptive_steps_report_what_they_used(self):
        headers, arrays = self.attribute("tolerance=0.05")
        used = int(headers["X-N-Steps"])
        self.assertIn(used, (8, 16, 32, 64, 128, 256, 512, 1024))
        self.assertEqual(arrays["integrated_directional_grads"].shape[0], used)
        gap = float(arrays["convergence_delta"])
        change = float(arrays["integrated_grads"].sum()) - gap
        if "X-Tolerance-Met" not in headers:
            self.assertLessEqual(abs(gap), 0.05 * abs(change) + 1e-6)

    def test_image_baseline_from_a_multipart_part(self):
        content_type, body = multipart([("image", "a.png", png(picture(21))),
                                        ("baseline_image", "b.png", png(np.full((8, 8, 3), 200, np.uint8))),
                                        ("baseline", None, b"image"), ("target", None, b"cat"),
                                        ("n_steps", None, STEPS.encode()), ("format", None, b"npz")])
        status, _, answer = post(body=body, content_type=content_type)
        self.assertEqual(status, 200, answer[:300])
        arrays = npz(answer)
        info = json.loads(http("GET", GATEWAY.url + "/v1/model")[2])
        grey = (200 / 255 - np.array(info["normalization"]["mean"])) / np.array(info["normalization"]["std"])
        np.testing.assert_allclose(arrays["path_baselines"][0, :, 3, 3], grey, rtol=1e-5)

    def test_option_mistakes(self):
        cases = [("baseline=grey", 422, "baseline"), ("baseline=image", 422, "baseline_image"),
                 ("baseline=zero&baseline_count=3", 422, "baseline_count"),
                 ("smoothgrad_samples=100", 413, "--max-paths"), ("tolerance=2", 422, "tolerance"),
                 ("tolerance=0.1&method=riemann_left", 422, "Gauss-Legendre"),
                 ("smoothgrad_samples=2&method=scan", 422, "scan"), ("blur_sigma=-1", 422, "blur_sigma")]
        for query, expected, words in cases:
            status, _, body = post(body=png(picture(1)), query="?" + query)
            self.assertEqual(status, expected, f"{query}: {body[:200]}")
            self.assertIn(words, json.loads(body)["error"], query)


def png_chunk(kind, data):
    import struct
    import zlib
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


class Targets(unittest.TestCase):
    def test_a_list_gives_one_result_per_class_equal_to_one_request_each(self):
        image = picture(30)
        status, headers, body = post(body=png(image), query=f"?target=cat,dog,1&n_steps={STEPS}&format=npz")
        self.assertEqual((status, headers["Content-Type"]), (200, "application/zip"), body[:300])
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            summary = json.loads(archive.read("summary.json"))
            self.assertEqual([s["target_name"] for s in summary], ["cat", "dog", "automobile"])
            self.assertEqual([s["file"] for s in summary], ["000-cat.npz", "000-dog.npz", "000-automobile.npz"])
            for entry in summary:
                together = npz(archive.read(entry["file"]))
                status, _, alone = post(body=png(image),
                                        query=f"?target={entry['target_class']}&n_steps={STEPS}&format=npz")
                self.assertEqual(status, 200)
                alone = npz(alone)
                np.testing.assert_array_equal(together["integrated_grads"], alone["integrated_grads"])
                np.testing.assert_array_equal(together["intermediates"], alone["intermediates"])
                self.assertEqual(int(together["target_class"]), entry["target_class"])

    def test_top_k_is_most_probable_first_in_one_json_document(self):
        status, _, body = post(body=png(picture(31)), query=f"?top_k=3&n_steps={STEPS}&format=json")
        self.assertEqual(status, 200, body[:300])
        doc = json.loads(body)
        self.assertEqual(len(doc["results"]), 3)
        probabilities = [s["probability"] for s in doc["summary"]]
        self.assertEqual(probabilities, sorted(probabilities, reverse=True))
        self.assertEqual(doc["summary"][0]["target_class"], doc["summary"][0]["predicted_class"])
        self.assertEqual([r["target_class"] for r in doc["results"]], [s["target_class"] for s in doc["summary"]])

    def test_json_lists_and_several_images_each_with_their_classes(self):
        fields = [("image", "a.png", png(picture(32))), ("image", "b.png", png(picture(33))),
                  ("target", None, b"cat,ship"), ("target", None, b"frog"), ("n_steps", None, STEPS.encode())]
        content_type, body = multipart(fields)
        status, _, answer = post(body=body, content_type=content_type)
        self.assertEqual(status, 200, answer[:300])
        with zipfile.ZipFile(io.BytesIO(answer)) as archive:
            summary = json.loads(archive.read("summary.json"))
        self.assertEqual([(s["index"], s["target_name"]) for s in summary], [(0, "cat"), (0, "ship"), (1, "frog")])
        body = json.dumps({"image": base64.b64encode(png(picture(34))).decode(), "target": ["bird", 9],
                           "n_steps": int(STEPS)}).encode()
        status, _, answer = post(body=body, content_type="application/json", query="?format=json")
        self.assertEqual(status, 200, answer[:300])
        self.assertEqual([s["target_name"] for s in json.loads(answer)["summary"]], ["bird", "truck"])

    def test_mistakes_are_4xx(self):
        for query, code, words in (("?top_k=99", 413, "--max-targets"), ("?target=cat,cat", 422, "twice"),
                                   ("?target=cat,dog&method=scan", 422, "scan"),
                                   ("?target=cat&top_k=2", 422, "either top_k"), ("?top_k=-1", 422, "top_k"),
                                   ("?target=cat,wolf", 422, "wolf")):
            status, _, body = post(body=png(picture(35)), query=query + f"&n_steps={STEPS}")
            self.assertEqual(status, code, (query, body))
            self.assertIn(words, json.loads(body)["error"], query)


class Regions(unittest.TestCase):
    def test_the_hierarchy_in_json_follows_the_definition(self):
        status, _, body = post(body=png(picture(40, 32, 32)),
                               query=f"?target=cat&n_steps={STEPS}&format=json&regions=quadtree&region_min_side=4")
        self.assertEqual(status, 200, body[:300])
        doc = json.loads(body)
        regions = doc["regions"]
        nodes = regions["nodes"]
        self.assertEqual(len(nodes), 1 + 4 + 16 + 64)  # 32 -> 16 -> 8 -> 4
        self.assertAlmostEqual(nodes[0]["value"], 1.0, places=9)
        # IDG(S) = sum of IG over S / |z_S|, z = x - 0 (the zero baseline), from the arrays in the answer.
        ig = np.array(doc["integrated_grads"], dtype=np.float64)[0]
        z = np.array(doc["input"], dtype=np.float64)[0]
        for node in nodes[:6] + nodes[-3:]:
            top, left, height, width = node["box"]
            window = (slice(None), slice(top, top + height), slice(left, left + width))
            expected = ig[window].sum() / np.sqrt((z[window] ** 2).sum())
            self.assertAlmostEqual(node["idg"], expected, delta=1e-5 * max(1.0, abs(expected)))
        # Dividends are |IDG| / Z; each node's value holds its own dividend and its subtree's.
        for node in nodes:
            self.assertAlmostEqual(node["dividend"], abs(node["idg"]) / regions["normalizer"], places=12)
        leaf = nodes[-1]
        top, left, height, width = leaf["box"]
        pixels = np.array(regions["pixel_value"])[top:top + height, left:left + width].sum()
        self.assertAlmostEqual(leaf["value"], leaf["dividend"] + pixels, places=12)

    def test_superpixels_and_the_png_of_the_top_regions(self):
        status, headers, body = post(body=png(picture(41)),
                                     query=f"?n_steps={STEPS}&format=png&regions=superpixels&segments=9&top_regions=3")
        self.assertEqual((status, headers.get("Content-Type")), (200, "image/png"), body[:300])
        self.assertEqual(Image.open(io.BytesIO(body)).size[0], 32 * 8 + 8)
        status, _, body = post(body=png(picture(41)), query=f"?n_steps={STEPS}&format=json&regions=superpixels")
        regions = json.loads(body)["regions"]
        self.assertEqual(regions["kind"], "superpixels")
        self.assertEqual(sum(n["pixels"] for n in regions["nodes"][1:]), 32 * 32)
        for query, words in (("&format=gzip&regions=quadtree", "format json"), ("&format=json&regions=octree", "octree"),
                             ("&format=json&regions=quadtree&region_min_side=1", "region_min_side")):
            status, _, body = post(body=png(picture(41)), query=f"?n_steps={STEPS}" + query)
            self.assertEqual(status, 422, query)
            self.assertIn(words, json.loads(body)["error"], query)


class Attacks(unittest.TestCase):
    """Hostile and careless uploads: each gets a 4xx naming the problem, and
    the service answers the next good request."""

    def test_hostile_images_and_bodies(self):
        import struct
        import zlib
        good = png(picture(30))
        # A decompression bomb: 60000 x 60000 declared, a few KB sent. Refused from the header.
        header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
        bomb = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) +
                png_chunk(b"IDAT", zlib.compress(b"\x00" * (1 + 60000 * 3) * 20)) + png_chunk(b"IEND", b""))
        cases = [
            ("truncated PNG", post(body=good[: len(good) // 2]), 422, "PNG"),
            ("truncated JPEG", post(body=jpeg(picture(31))[:300], content_type="image/jpeg"), 422, "JPEG"),
            ("decompression bomb", post(body=bomb), 413, "--max-image-side"),
            ("1 x 100000", post(body=png(np.zeros((1, 100000, 3), np.uint8))), 413, "--max-image-side"),
            ("nested JSON", post(body=b"[" * 100000 + b"]" * 100000, content_type="application/json"), 422,
             "nested"),
            ("NaN", post(body=b'{"img_data": [[[NaN, 1, 2]]]}', content_type="application/json"), 400, "JSON"),
            ("Infinity n_steps", post(body=b'{"img_data": [[[0, 1, 2]]], "n_steps": Infinity}',
                                      content_type="application/json"), 400, "JSON"),
            ("huge n_steps", post(body=good, query="?n_steps=" + "9" * 400), 422, "n_steps"),
            ("huge target index", post(body=good, query="?target=" + "9" * 400), 422, "target"),
            ("huge seed", post(body=good, query="?seed=1e300"), 422, "seed"),
            ("long unicode class", post(body=good, query="?target=" + "%F0%9F%90%88" * 5000), 422, "unknown class"),
            ("a 200 MB claim", post(body=b"x" * 100, content_type="multipart/form-data; boundary=" + "b" * 5000), 422,
             "boundary"),
        ]
        for what, (status, _, body), expected, words in cases:
            self.assertEqual(status, expected, f"{what}: {body[:200]}")
            message = json.loads(body)["error"]
            self.assertIn(words, message, what)
            self.assertLess(len(message), 2000, f"{what}: the message quotes too much")
        self.assertEqual(post(body=good, query=f"?n_steps={STEPS}")[0], 200)


class Describe(unittest.TestCase):
    def test_model_info(self):
        status, _, body = http("GET", GATEWAY.url + "/v1/model")
        self.assertEqual(status, 200)
        info = json.loads(body)
        self.assertEqual((info["family"], info["variant"], info["input_size"]), ("lanet", "C16-L8", 32))
        self.assertEqual(info["classes"][3], "cat")
        np.testing.assert_allclose(info["normalization"]["mean"], [0.4914, 0.4822, 0.4465], atol=1e-4)
        self.assertEqual(info["limits"]["max_images"], 4)
        self.assertEqual((info["limits"]["max_paths"], info["limits"]["max_targets"]), (64, 16))
        self.assertIn("scan", info["methods"])
        self.assertEqual(json.loads(http("GET", GATEWAY.url + "/v1/models/default")[2])["name"], "default")
        self.assertEqual(http("GET", GATEWAY.url + "/v1/models/nope")[0], 404)

    def test_every_route_in_openapi_is_served(self):
        status, headers, body = http("GET", GATEWAY.url + "/openapi.json")
        self.assertEqual(status, 200)
        spec = json.loads(body)
        self.assertEqual(spec["openapi"][:2], "3.")
        for path, item in spec["paths"].items():
            concrete = path.replace("{name}", "default")
            for method in item:
                status, _, answer = http(method.upper(), GATEWAY.url + concrete, b"" if method != "get" else None,
                                         {"Content-Type": "application/json"})
                # An empty POST is a 400 or 422 from the route's own validation, never the 404 of no route.
                self.assertIn(status, (200, 400, 422), f"{method} {path}: {answer[:200]}")
        self.assertEqual(http("GET", GATEWAY.url + "/no/such/route")[0], 404)
        docs = http("GET", GATEWAY.url + "/docs")
        self.assertEqual(docs[0], 200)
        self.assertIn("text/html", docs[1]["Content-Type"])
        self.assertIn(b"openapi.json", docs[2])

    def test_metrics_count_requests_and_steps(self):
        post(body=png(picture(1)), query=f"?n_steps={STEPS}")
        post(body=png(picture(1)), accept="text/csv")
        status, headers, body = http("GET", GATEWAY.url + "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain"))
        lines = body.decode().splitlines()
        values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if not line.startswith("#")}
        self.assertGreaterEqual(values['intgrads_http_requests_total{route="/v1/attributions",status="200"}'], 1)
        self.assertGreaterEqual(values['intgrads_http_requests_total{route="/v1/attributions",status="406"}'], 1)
        self.assertGreaterEqual(values["intgrads_path_steps_total"], int(STEPS))
        self.assertEqual(values['intgrads_workers{model="default",state="idle"}'] +
                         values['intgrads_workers{model="default",state="busy"}'], 1)
        self.assertIn("intgrads_queue_depth", values)
        self.assertGreaterEqual(values['intgrads_http_request_duration_seconds_count{route="/v1/attributions"}'], 2)


def read_events(answer, kind):
    """The events of a streamed answer: NDJSON lines or Server-Sent Events."""
    events = []
    if kind == "ndjson":
        for line in answer.splitlines():
            if line.strip():
                events.append(json.loads(line))
        return events
    for block in answer.decode().split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        event = json.loads(fields["data"])
        assert fields["event"] == event["event"], block[:100]
        events.append(event)
    return events


class Streams(unittest.TestCase):
    """Progress while the passes run, asked for by Accept: a gateway of its
    own whose worker takes 4 path points a batch (so that there are many)
    and whose answers are capped at 4 MB (so that one fails after its
    progress)."""

    @classmethod
    def setUpClass(cls):
        cls.gateway = Gateway("--max-reply-bytes", "4000000")
        cls.gateway.start_worker("--chunk-size", "4")
        cls.gateway.wait_ready()

    @classmethod
    def tearDownClass(cls):
        cls.gateway.__exit__(None, None, None)

    def stream(self, accept, query, image=None):
        return http("POST", self.gateway.url + "/v1/attributions" + query, png(image if image is not None
                                                                                else picture(50)),
                    {"Content-Type": "image/png", "Accept": accept})

    def check_progress(self, events, total):
        progress = [e for e in events if e["event"] == "progress"]
        self.assertGreaterEqual(len(progress), 1)
        done = [e["done"] for e in progress]
        self.assertEqual(done, sorted(done))
        self.assertEqual(done[-1], total)  # the last report: every point done
        for e in progress:
            self.assertEqual((e["total"], e["image"], e["images"]), (total, 0, 1))
            self.assertGreaterEqual(e["seconds_left"], 0)
            self.assertEqual(np.array(e["integrated_grads"]).shape, (3, 32, 32))
        return progress

    def test_ndjson_progress_builds_the_ig_and_ends_with_the_same_answer(self):
        query = "?target=cat&n_steps=24"
        status, headers, body = self.stream("application/x-ndjson", query)
        self.assertEqual((status, headers["Content-Type"]), (200, "application/x-ndjson"), body[:300])
        self.assertEqual(headers.get("Transfer-Encoding"), "chunked")
        events = read_events(body, "ndjson")
        self.assertEqual([e["event"] for e in events][-1], "result")
        progress = self.check_progress(events, 24)
        result = events[-1]
        self.assertEqual(result["content_type"], "application/json")
        self.assertEqual(result["headers"]["X-Target-Name"], "cat")
        self.assertIn("compute;dur=", result["headers"]["Server-Timing"])
        # The same answer as without a stream, byte for byte (the result is the event's last member).
        status, _, plain = http("POST", self.gateway.url + "/v1/attributions" + query + "&format=json",
                                png(picture(50)), {"Content-Type": "image/png"})
        self.assertEqual(status, 200)
        line = body.splitlines()[-1]
        self.assertEqual(line[line.index(b'"result":') + 9:-1], plain)
        final = np.array(result["result"]["integrated_grads"], np.float32)[0]
        np.testing.assert_allclose(np.array(progress[-1]["integrated_grads"], np.float32), final, rtol=1e-4,
                                   atol=1e-6)

    def test_sse_with_a_format_carries_it_in_base64_after_several_reports(self):
        status, headers, body = self.stream("text/event-stream", "?target=cat&n_steps=128&format=npz")
        self.assertEqual((status, headers["Content-Type"]), (200, "text/event-stream"), body[:300])
        events = read_events(body, "sse")
        progress = self.check_progress(events, 128)
        self.assertGreaterEqual(len(progress), 2)  # 32 batches of 4 points, reported every 250 ms
        self.assertEqual(events[-1]["content_type"], "application/x-npz")
        arrays = npz(base64.b64decode(events[-1]["base64"]))
        self.assertEqual(arrays["integrated_directional_grads"].shape[0], 128)
        np.testing.assert_allclose(np.array(progress[-1]["integrated_grads"], np.float32),
                                   arrays["integrated_grads"][0], rtol=1e-4, atol=1e-6)
        # Part way, the IG so far is the sum over the points done (rebuilt from the answer's rows).
        middle = next((e for e in progress if e["done"] < 128), None)
        if middle is not None:
            rows = middle["done"]
            partial = (arrays["step_sizes"][:rows, 0, None, None, None] * arrays["integrated_directional_grads"][:rows]
                       * arrays["input"][0]).sum(0)
            np.testing.assert_allclose(np.array(middle["integrated_grads"], np.float32), partial, rtol=1e-3,
                                       atol=1e-5)

    def test_failures_before_and_after_the_stream_starts(self):
        # Refused before any pass: the usual JSON answer.
        status, headers, body = self.stream("application/x-ndjson", "?target=cat&n_steps=0")
        self.assertEqual((status, headers["Content-Type"]), (422, "application/json"))
        self.assertIn("n_steps", json.loads(body)["error"])
        # Refused after the passes (a JSON answer over --max-reply-bytes): progress, then an error event.
        status, _, body = self.stream("application/x-ndjson", "?target=cat&n_steps=64")
        self.assertEqual(status, 200)
        events = read_events(body, "ndjson")
        self.check_progress(events, 64)
        self.assertEqual((events[-1]["event"], events[-1]["status"]), ("error", 413))
        self.assertIn("max-reply-bytes", events[-1]["error"])
        # Without Accept asking for it, nothing changes.
        status, headers, _ = http("POST", self.gateway.url + "/v1/attributions?target=cat&n_steps=8", png(picture(50)),
                                  {"Content-Type": "image/png"})
        self.assertEqual((status, headers["Content-Type"], headers.get("Transfer-Encoding")),
                         (200, "application/gzip", None))

    def test_one_long_image_shows_its_progress_in_both_command_lines(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            Image.fromarray(picture(52)).save(os.path.join(tmp, "one.png"))
            for command in ([os.path.join(BIN, "intgrads-images"), "explain"],
                            [sys.executable, "-m", "intgrads_client", "--server", self.gateway.url, "explain"]):
                out = os.path.join(tmp, "out-" + str(len(command)))
                flags = ["--server", self.gateway.url] if len(command) == 2 else []
                run = subprocess.run([*command, os.path.join(tmp, "one.png"), "--out", out, *flags, "--target",
                                      "cat", "--n-steps", "64", "--format", "npz"],
                                     capture_output=True, text=True, timeout=300,
                                     env={**os.environ, "PYTHONPATH": os.path.join(rm.REPO, "clients", "python")})
                self.assertEqual(run.returncode, 0, run.stderr)
                # A part of the one image, before its end (a log gets the first report and the last line).
                fractions = [float(m) for m in re.findall(r"\[[#. ]*\]? *([0-9.]+)/1\b", run.stderr)]
                self.assertTrue(any(0 < f < 1 for f in fractions), run.stderr)
                self.assertEqual(fractions[-1], 1.0, run.stderr)
                with open(os.path.join(out, "one.npz"), "rb") as f:
                    self.assertEqual(npz(f.read())["integrated_directional_grads"].shape[0], 64)

    def test_the_ig_so_far_stops_at_the_streams_budget(self):
        # A gateway whose streams carry at most 50 KB of IG: one 32 x 32 IG (about 37 KB as JSON), then counts.
        with Gateway("--max-stream-ig-bytes", "50000") as gateway:
            gateway.start_worker("--chunk-size", "4", quiet=True)
            gateway.wait_ready()
            status, _, body = http("POST", gateway.url + "/v1/attributions?target=cat&n_steps=128&format=npz",
                                   png(picture(53)), {"Content-Type": "image/png", "Accept": "application/x-ndjson"})
            self.assertEqual(status, 200)
            events = read_events(body, "ndjson")
            progress = [e for e in events if e["event"] == "progress"]
            self.assertGreaterEqual(len(progress), 2, events[:1])
            carried = ["integrated_grads" in e for e in progress]
            self.assertEqual(carried, [True] + [False] * (len(progress) - 1))
            self.assertEqual(progress[-1]["done"], 128)  # the counts go on to the end
            self.assertEqual(events[-1]["event"], "result")

    def test_python_client_reports_progress(self):
        client = intgrads_client.Client(self.gateway.url)
        seen = []
        explanation = client.explain(picture(51), target="cat", n_steps=64, on_progress=seen.append)
        self.assertTrue(seen)
        self.assertEqual((seen[-1].done, seen[-1].total, seen[-1].fraction), (64, 64, 1.0))
        np.testing.assert_allclose(seen[-1].integrated_grads, explanation.integrated_grads[0], rtol=1e-4, atol=1e-6)
        quiet = client.explain(picture(51), target="cat", n_steps=64)
        np.testing.assert_array_equal(quiet.integrated_grads, explanation.integrated_grads)
        with self.assertRaises(intgrads_client.RequestError) as refused:
            client.attribute_bytes(picture(51), target="cat", format="json", n_steps=64, on_progress=seen.append)
        self.assertEqual(refused.exception.status, 413)


class CommandLineClient(unittest.TestCase):
    def test_explain_a_folder_writes_one_output_per_image_and_a_table(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            folder = os.path.join(tmp, "photos")
            os.makedirs(folder)
            Image.fromarray(picture(13)).save(os.path.join(folder, "a.png"))
            Image.fromarray(picture(14)).save(os.path.join(folder, "b.jpg"))
            with open(os.path.join(folder, "c.png"), "wb") as f:
                f.write(b"not an image")
            out = os.path.join(tmp, "out")
            run = subprocess.run([os.path.join(BIN, "intgrads-images"), "explain", folder, "--out", out,
                                  "--server", GATEWAY.url, "--target", "cat", "--n-steps", STEPS, "--format", "npz",
                                  "--baseline", "blur", "--blur-sigma", "2"],
                                 capture_output=True, text=True, timeout=300)
            self.assertEqual(run.returncode, 1, run.stderr)  # c.png failed
            self.assertEqual(sorted(os.listdir(out)), ["photos", "summary.csv", "summary.json"])
            self.assertEqual(sorted(os.listdir(os.path.join(out, "photos"))), ["a.npz", "b.npz"])
            with open(os.path.join(out, "photos", "a.npz"), "rb") as f:
                arrays = npz(f.read())
            self.assertEqual(int(arrays["target_class"]), 3)
            self.assertIn("path_baselines", arrays)  # the blur baseline went along
            table = run.stdout.splitlines()
            self.assertTrue(table[0].split()[:4] == ["image", "target", "predicted", "probability"], table[0])
            row_a = next(line for line in table if "a.png" in line).split()
            self.assertEqual(row_a[1], "cat")
            self.assertAlmostEqual(float(row_a[3]), float(arrays["probabilities"][3]), places=5)
            self.assertAlmostEqual(float(row_a[4]), float(arrays["convergence_delta"]), places=5)
            self.assertIn("error 422", next(line for line in table if "c.png" in line))
            self.assertIn("3 image(s), 1 failed", run.stdout)
            self.assertIn("3.0/3", run.stderr)  # the progress bar's last state
            self.assertIn("img/s", run.stderr)

    def test_explain_top_k_writes_a_zip_per_image(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "a.png")
            Image.fromarray(picture(37)).save(path)
            out = os.path.join(tmp, "out")
            run = subprocess.run([os.path.join(BIN, "intgrads-images"), "explain", path, "--out", out, "--server",
                                  GATEWAY.url, "--top-k", "2", "--n-steps", STEPS, "--format", "npz"],
                                 capture_output=True, text=True, timeout=300)
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertEqual(sorted(os.listdir(out)), ["a.zip", "summary.csv", "summary.json"])
            with zipfile.ZipFile(os.path.join(out, "a.zip")) as archive:
                self.assertEqual(len(json.loads(archive.read("summary.json"))), 2)
            self.assertIn("top 2", run.stdout)
            run = subprocess.run([os.path.join(BIN, "intgrads-images"), "explain", path, "--out", out, "--server",
                                  GATEWAY.url, "--n-steps", STEPS, "--format", "json", "--regions", "superpixels",
                                  "--segments", "4", "--no-resume"], capture_output=True, text=True, timeout=300)
            self.assertEqual(run.returncode, 0, run.stderr)
            with open(os.path.join(out, "a.json")) as f:
                self.assertEqual(json.load(f)["regions"]["kind"], "superpixels")


    def test_explain_a_tree_and_a_zip_several_at_a_time_resuming_with_a_summary(self):
        import csv
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            tree = os.path.join(tmp, "pictures")
            for i, (label, name) in enumerate([("cat", "0001.png"), ("ship", "0001.png"), ("ship", "0002.jpg")]):
                os.makedirs(os.path.join(tree, label), exist_ok=True)
                Image.fromarray(picture(80 + i)).save(os.path.join(tree, label, name))
            archive = os.path.join(tmp, "test.zip")
            with zipfile.ZipFile(archive, "w") as z:  # stored, as CIFAR-10's zips are
                z.writestr("test/dog/0001.png", png(picture(90)))
                z.writestr("test/readme.txt", "not an image")
            out = os.path.join(tmp, "out")
            command = [os.path.join(BIN, "intgrads-images"), "explain", tree, archive, "--out", out, "--server",
                       GATEWAY.url, "--n-steps", STEPS, "--format", "npz"]
            run = subprocess.run(command + ["--concurrency", "3"], capture_output=True, text=True, timeout=300)
            self.assertEqual(run.returncode, 0, run.stderr)
            names = ["pictures/cat/0001.npz", "pictures/ship/0001.npz", "pictures/ship/0002.npz", "test/test/dog/0001.npz"]
            for name in names:  # the same file names in two classes: kept apart by their folders
                self.assertTrue(os.path.isfile(os.path.join(out, name)), name)
            with open(os.path.join(out, "summary.csv")) as f:
                rows = list(csv.DictReader(f))
            self.assertEqual([r["image"] for r in rows], ["pictures/cat/0001.png", "pictures/ship/0001.png",
                                                          "pictures/ship/0002.jpg", "test/test/dog/0001.png"])
            self.assertEqual({r["status"] for r in rows}, {"computed"})
            with open(os.path.join(out, "summary.json")) as f:
                summary = json.load(f)
            self.assertEqual(list(summary[0]), ["image", "output", "status", "target", "predicted", "probability",
                                                "convergence_delta", "seconds", "error"])
            with open(os.path.join(out, names[3]), "rb") as f:
                arrays = npz(f.read())
            self.assertAlmostEqual(float(summary[3]["convergence_delta"]), float(arrays["convergence_delta"]),
                                   places=5)
            # Again, one output gone: it alone is computed; the others keep their rows.
            os.remove(os.path.join(out, names[1]))
            run = subprocess.run(command, capture_output=True, text=True, timeout=300)  # concurrency from /v1/workers
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertIn("3 kept from an earlier run", run.stdout)
            with open(os.path.join(out, "summary.json")) as f:
                again = json.load(f)
            self.assertEqual([r["status"] for r in again], ["kept", "computed", "kept", "kept"])
            self.assertEqual(again[3]["convergence_delta"], summary[3]["convergence_delta"])
            # A zip with compressed members says so.
            deflated = os.path.join(tmp, "deflated.zip")
            with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("a.png", png(picture(91)))
            run = subprocess.run([os.path.join(BIN, "intgrads-images"), "explain", deflated, "--out", out],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(run.returncode, 2)
            self.assertIn("compressed", run.stderr)

    def test_explain_over_https(self):
        """The README puts TLS in front of the gateway: explain speaks https
        (libcurl), trusting the proxy's certificate with --cacert."""
        import ssl
        import tempfile
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                            "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                           check=True, capture_output=True)

            class Proxy(BaseHTTPRequestHandler):  # TLS in, plain HTTP to the gateway
                def forward(self):
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                    status, answer_headers, answer = http(self.command, GATEWAY.url + self.path, body or None, headers)
                    self.send_response(status)
                    for name, value in answer_headers.items():
                        if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)

                do_GET = do_POST = forward

                def log_message(self, *args):
                    pass

            server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.addCleanup(server.server_close)
            self.addCleanup(server.shutdown)
            url = f"https://127.0.0.1:{server.server_address[1]}"
            path = os.path.join(tmp, "a.png")
            Image.fromarray(picture(92)).save(path)
            out = os.path.join(tmp, "out")
            run = subprocess.run([os.path.join(BIN, "intgrads-images"), "explain", path, "--out", out, "--server", url,
                                  "--cacert", cert, "--n-steps", STEPS, "--format", "npz"],
                                 capture_output=True, text=True, timeout=300)
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
            with open(os.path.join(out, "a.npz"), "rb") as f:
                self.assertEqual(npz(f.read())["integrated_grads"].shape, (1, 3, 32, 32))
            # Without trusting the certificate, TLS fails, and says so.
            run = subprocess.run([os.path.join(BIN, "intgrads-images"), "explain", path, "--out", out, "--server", url,
                                  "--no-resume", "--concurrency", "1"], capture_output=True, text=True, timeout=300)
            self.assertEqual(run.returncode, 1)
            self.assertIn("certificate", run.stdout)


class PythonClient(unittest.TestCase):
    def setUp(self):
        self.client = intgrads_client.Client(GATEWAY.url)

    def test_explain_from_a_path_bytes_or_an_array(self):
        import tempfile
        image = picture(10)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "cat.png")
            with open(path, "wb") as f:
                f.write(png(image))
            from_path = self.client.explain(path, target="cat", n_steps=int(STEPS))
        from_array = self.client.explain(image, target=3, n_steps=int(STEPS))
        from_bytes = self.client.explain(png(image), target="cat", n_steps=int(STEPS))
        self.assertEqual(from_path.name, "cat.png")
        self.assertEqual(from_path.target_name, "cat")
        self.assertEqual(from_path.integrated_directional_grads.shape, (int(STEPS), 3, 32, 32))
        np.testing.assert_array_equal(from_path.integrated_grads, from_array.integrated_grads)
        np.testing.assert_array_equal(from_path.integrated_grads, from_bytes.integrated_grads)
        self.assertIn("cat", repr(from_path))

    def test_explain_many_and_heatmap(self):
        results = self.client.explain_many([picture(11), picture(12)], targets=["cat", "predicted"],
                                           n_steps=int(STEPS))
        self.assertEqual([r.target_name for r in results][0], "cat")
        self.assertEqual(results[1].target_class, results[1].predicted_class)
        heatmap = Image.open(io.BytesIO(self.client.heatmap(picture(11), target="cat", n_steps=int(STEPS))))
        self.assertEqual(heatmap.format, "PNG")
        with self.assertRaises(ValueError):
            self.client.explain_many([picture(11), picture(12)], targets=["cat"])

    def test_explain_targets(self):
        listed = self.client.explain_targets(picture(36), targets=["cat", "dog"], n_steps=int(STEPS))
        self.assertEqual([e.target_name for e in listed], ["cat", "dog"])
        top = self.client.explain_targets(picture(36), top_k=2, n_steps=int(STEPS))
        self.assertEqual(top[0].target_class, top[0].predicted_class)
        self.assertEqual(len(top), 2)
        one = self.client.explain_targets(picture(36), targets=["cat"], n_steps=int(STEPS))
        np.testing.assert_array_equal(one[0].integrated_grads, listed[0].integrated_grads)
        with self.assertRaises(ValueError):
            self.client.explain_targets(picture(36))

    def test_regions(self):
        regions = self.client.regions(picture(38), target="cat", kind="quadtree", n_steps=int(STEPS),
                                      region_min_side=8)
        self.assertEqual(len(regions["nodes"]), 1 + 4 + 16)
        self.assertEqual(regions["pixel_value"].shape, (32, 32))
        self.assertAlmostEqual(regions["nodes"][0]["value"], 1.0, places=9)
        png_bytes = self.client.heatmap(picture(38), n_steps=int(STEPS), regions="superpixels", top_regions=2)
        self.assertEqual(Image.open(io.BytesIO(png_bytes)).format, "PNG")

    def test_options_pass_through(self):
        e = self.client.explain(picture(15), target="cat", n_steps=int(STEPS), baseline="image",
                                baseline_image=np.full((4, 4, 3), 255, np.uint8), smoothgrad_samples=2, seed=3)
        self.assertEqual(e.integrated_directional_grads.shape[0], 2 * int(STEPS))
        self.assertEqual(e.path_baselines.shape, (2, 3, 32, 32))
        info = self.client.model()
        white = (1 - np.array(info["normalization"]["mean"])) / np.array(info["normalization"]["std"])
        np.testing.assert_allclose(e.path_baselines[1, :, 0, 0], white, rtol=1e-5)
        with self.assertRaises(intgrads_client.RequestError) as caught:
            self.client.explain(picture(15), baseline="grey")
        self.assertIn("baseline", caught.exception.message)

    def test_explain_a_folder_tree_and_a_zip_with_resume_and_a_summary(self):
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            tree = os.path.join(tmp, "pictures")
            for i, (label, name) in enumerate([("cat", "a.png"), ("cat", "b.png"), ("ship", "c.png")]):
                os.makedirs(os.path.join(tree, label), exist_ok=True)
                with open(os.path.join(tree, label, name), "wb") as f:
                    f.write(png(picture(60 + i)))
            archive = os.path.join(tmp, "test.zip")
            with zipfile.ZipFile(archive, "w") as z:
                z.writestr("test/dog/d.png", png(picture(70)))
                z.writestr("test/notes.txt", "not an image")
            inputs = intgrads_client.read_inputs([tree, archive])
            self.assertEqual([name for name, _ in inputs], ["pictures/cat/a.png", "pictures/cat/b.png",
                                                            "pictures/ship/c.png", "test/test/dog/d.png"])
            out = os.path.join(tmp, "out")
            progress = io.StringIO()
            rows = intgrads_client.explain_all(self.client, inputs, out, target="cat", n_steps=int(STEPS),
                                               progress=progress)
            self.assertEqual([r["status"] for r in rows], ["computed"] * 4)
            self.assertIn("img/s", progress.getvalue())
            self.assertIn("4.0/4", progress.getvalue())
            with np.load(os.path.join(out, "pictures", "cat", "a.npz")) as d:
                self.assertEqual(d["integrated_grads"].shape, (1, 3, 32, 32))
            with open(os.path.join(out, "summary.csv")) as f:
                self.assertEqual(f.readline().strip().split(","), ["image", "output", "status", "target", "predicted",
                                                                   "probability", "convergence_delta", "seconds",
                                                                   "error"])
            with open(os.path.join(out, "summary.json")) as f:
                self.assertEqual(json.load(f)[0]["target"], "cat")
            # A second run resumes: what is written is kept.
            os.remove(os.path.join(out, "pictures", "ship", "c.npz"))
            again = intgrads_client.explain_all(self.client, inputs, out, target="cat", n_steps=int(STEPS))
            self.assertEqual([r["status"] for r in again], ["kept", "kept", "computed", "kept"])
            self.assertEqual(again[0]["convergence_delta"], rows[0]["convergence_delta"])  # kept with its row
            # The formats are the service's own list (GET /v1/model), not the client's.
            with self.assertRaisesRegex(ValueError, "'bmp' is not one the service writes: gzip, npz, json, png"):
                intgrads_client.explain_all(self.client, inputs, out, format="bmp")
            # The command line, installed as a package the way a user would (offline, Debian's setuptools).
            venv = os.path.join(tmp, "venv")
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
            source = os.path.join(tmp, "client-source")  # a copy: setuptools builds in the tree it is given
            shutil.copytree(os.path.join(rm.REPO, "clients", "python"), source,
                            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            pip = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--no-index", "--no-build-isolation",
                                  source], capture_output=True, text=True)
            self.assertEqual(pip.returncode, 0, pip.stdout + pip.stderr)
            for command in ([os.path.join(venv, "bin", "intgrads-client")],
                            [os.path.join(venv, "bin", "python"), "-m", "intgrads_client"]):
                run = subprocess.run(command + ["--help"], capture_output=True, text=True, cwd=tmp)
                self.assertEqual(run.returncode, 0, run.stderr)
                self.assertIn("explain", run.stdout)
            run = subprocess.run([os.path.join(venv, "bin", "intgrads-client"), "--server", GATEWAY.url, "explain",
                                  tree, "--out", os.path.join(tmp, "cli"), "--n-steps", STEPS, "--format", "png"],
                                 capture_output=True, text=True, cwd=tmp, timeout=300)
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertIn("3 image(s), 0 failed", run.stdout)
            self.assertEqual(Image.open(os.path.join(tmp, "cli", "pictures", "ship", "c.png")).format, "PNG")

    def test_errors_raise_with_the_services_message(self):
        with self.assertRaises(intgrads_client.RequestError) as caught:
            self.client.explain(picture(1), target="zebra")
        self.assertEqual(caught.exception.status, 422)
        self.assertIn("zebra", caught.exception.message)
        with self.assertRaises(intgrads_client.RequestError) as caught:
            intgrads_client.Client(GATEWAY.url, model="nope").explain(picture(1))
        self.assertEqual(caught.exception.status, 404)
        with self.assertRaises(intgrads_client.ServiceError):
            intgrads_client.Client("http://127.0.0.1:9").model()


if __name__ == "__main__":
    unittest.main()
