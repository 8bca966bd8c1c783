"""A small client for the intgrads-images service: the standard library and
numpy only.

    from intgrads_client import Client
    client = Client("http://localhost:8888")
    e = client.explain("cat.jpg", target="cat", n_steps=50)
    e.integrated_grads.shape          # (1, 3, 32, 32)
    e.integrated_directional_grads    # (n_steps, 3, 32, 32): the gradient at each path point
    e.step_sizes, e.intermediates, e.probabilities, e.convergence_delta

Images may be file paths, PNG or JPEG bytes, or H x W x 3 uint8 arrays. A
4xx answer raises RequestError (with .status and the service's message),
a 503 Unavailable, anything else ServiceError.
"""

import base64
import concurrent.futures
import csv
import http.client
import io
import json
import os
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib

import numpy as np

__all__ = ["Client", "Explanation", "ServiceError", "RequestError", "Unavailable", "read_inputs", "explain_all"]

ARRAYS = ("integrated_grads", "integrated_directional_grads", "step_sizes", "intermediates", "output", "probabilities")


class ServiceError(Exception):
    """The service answered with an error (or not at all)."""

    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class RequestError(ServiceError):
    """A 4xx: the request was wrong; the message says how."""


class Unavailable(ServiceError):
    """A 503: no worker could take the request in time; retry later."""


class Progress:
    """How far one attribution's passes are (a streamed answer's progress
    event): path points `done` of `total`, `elapsed_seconds`,
    `seconds_left` (None before the first report), `image` (its index in
    the request) and `integrated_grads`, the IG built so far (3 x S x S
    numpy array of the first target, or None)."""

    def __init__(self, event):
        self.image = int(event.get("image", 0))
        self.done = int(event["done"])
        self.total = int(event["total"])
        self.elapsed_seconds = float(event.get("elapsed_seconds", 0.0))
        self.seconds_left = event.get("seconds_left")
        ig = event.get("integrated_grads")
        self.integrated_grads = None if ig is None else np.array(ig, dtype=np.float32)

    @property
    def fraction(self):
        return self.done / self.total if self.total else 0.0

    def __repr__(self):
        return f"<Progress image {self.image}: {self.done}/{self.total} points, {self.elapsed_seconds:.1f} s>"


def _read_stream(answer, on_progress):
    """The (body, headers) of a streamed answer's result event, after handing
    each progress event to on_progress; an error event raises."""
    for line in answer:
        if not line.strip():
            continue
        event = json.loads(line)
        kind = event.get("event")
        if kind == "progress":
            on_progress(Progress(event))
        elif kind == "result":
            if "base64" in event:
                body = base64.b64decode(event["base64"])
            else:  # the JSON answer, byte for byte: the event's last member
                start = line.index(b'"result":') + len(b'"result":')
                body = line[start:line.rstrip().rindex(b"}")]
            headers = dict(event.get("headers", {}))
            headers["Content-Type"] = event.get("content_type", "")
            return body, headers
        elif kind == "error":
            status = int(event.get("status", 500))
            kind = Unavailable if status == 503 else RequestError if 400 <= status < 500 else ServiceError
            raise kind(status, event.get("error", ""))
    raise ServiceError(0, "the stream ended without a result")


class Explanation:
    """One image's attribution: numpy arrays with the names of the original
    server's dict, plus the class names and probabilities (and, for
    several paths or another baseline, path_inputs and path_baselines)."""

    def __init__(self, arrays, classes=None, name=""):
        for key in ARRAYS:
            setattr(self, key, arrays[key])
        self.path_inputs = arrays.get("path_inputs")
        self.path_baselines = arrays.get("path_baselines")
        self.target_class = int(arrays["target_class"])
        self.convergence_delta = float(arrays["convergence_delta"])
        self.predicted_class = int(np.argmax(self.probabilities))
        self.classes = classes
        self.name = name

    @property
    def target_name(self):
        return self.classes[self.target_class] if self.classes else str(self.target_class)

    @property
    def probability(self):
        return float(self.probabilities[self.target_class])

    def __repr__(self):
        return (f"Explanation({self.name or 'image'}: {self.target_name}, p={self.probability:.3f}, "
                f"n_steps={len(self.step_sizes)}, delta={self.convergence_delta:.3g})")


def png_bytes(array):
    """An 8-bit PNG of an H x W (grey), H x W x 3 or H x W x 4 uint8 array."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"images must be H x W, H x W x 3 or H x W x 4, got shape {array.shape}")
    height, width, channels = array.shape
    colour = {1: 0, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + array[y].tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def image_bytes(image):
    """(bytes, name) of a path, PNG/JPEG bytes or a uint8 array."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image), ""
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            return f.read(), os.path.basename(str(image))
    return png_bytes(np.asarray(image)), ""


def read_npz(data):
    with np.load(io.BytesIO(data)) as npz:
        return {key: npz[key] for key in npz.files}


class Client:
    """`url`: the service, or several gateways of one pool (a list, or URLs
    separated by commas): a request whose gateway cannot be reached, drops
    the connection or is shutting down (503) is sent to the next one; an
    attribution is deterministic, so a retry is safe."""

    def __init__(self, url="http://localhost:8888", token=None, model=None, timeout=600):
        urls = url.split(",") if isinstance(url, str) else list(url)
        self.urls = [u.strip().rstrip("/") for u in urls if u.strip()]
        if not self.urls:
            raise ValueError("no service URL")
        self.url = self.urls[0]
        self.token = token if token is not None else os.environ.get("INTGRADS_TOKEN")
        self.model_name = model
        self.timeout = timeout
        self._classes = None

    def _request(self, method, path, body=None, headers=None, query=None, on_progress=None):
        """(body, headers) of the answer; with `on_progress`, the answer is
        streamed (NDJSON) and each progress event is handed to it first."""
        headers = dict(headers or {})
        if on_progress is not None:
            headers["Accept"] = "application/x-ndjson"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        suffix = path + ("?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
                         if query else "")
        last = None
        for _ in range(len(self.urls)):
            try:
                return self._request_once(self.url + suffix, method, body, headers, on_progress)
            except (Unavailable, ServiceError) as e:
                if e.status not in (0, 503):
                    raise
                last = e
                self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]
        raise last

    def _request_once(self, url, method, body, headers, on_progress=None):
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                if on_progress is not None and answer.headers.get_content_type() == "application/x-ndjson":
                    return _read_stream(answer, on_progress)
                return answer.read(), dict(answer.headers)
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text
            kind = Unavailable if e.code == 503 else RequestError if 400 <= e.code < 500 else ServiceError
            raise kind(e.code, message) from None
        except urllib.error.URLError as e:
            raise ServiceError(0, f"cannot reach {url}: {e.reason}") from None
        except (ConnectionError, http.client.HTTPException, TimeoutError) as e:
            raise ServiceError(0, f"lost the connection to {url}: {e}") from None

    def workers(self):
        """The pool: each worker's id, model, device, state (GET /v1/workers)."""
        body, _ = self._request("GET", "/v1/workers")
        return json.loads(body)["workers"]

    def attribute_bytes(self, image, target="predicted", format="npz", on_progress=None, **options):
        """One image's answer as the service sends it (bytes, headers): `image`
        as a path, PNG/JPEG bytes or an array; the body holds the format asked
        for (npz, gzip, json or png). With `on_progress` (a callable), the
        answer is streamed and it gets a Progress while the passes run."""
        data, _ = image_bytes(image)
        kind = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
        query = {"target": target, "format": format, **{k: v for k, v in options.items() if v is not None}}
        return self._request("POST", self._model_path("/attributions"), data, {"Content-Type": kind}, query,
                             on_progress)

    def _model_path(self, suffix):
        return f"/v1/models/{urllib.parse.quote(self.model_name)}{suffix}" if self.model_name else f"/v1{suffix}"

    def model(self):
        """The served model: family, variant, classes, input size, normalization, limits."""
        if self.model_name:
            body, _ = self._request("GET", self._model_path(""))
        else:
            body, _ = self._request("GET", "/v1/model")
        info = json.loads(body)
        self._classes = info["classes"]
        return info

    @property
    def classes(self):
        if self._classes is None:
            self.model()
        return self._classes

    def _post(self, payload, accept, on_progress=None, **options):
        query = {"format": accept}
        body = json.dumps({**payload, **{k: v for k, v in options.items() if v is not None}}).encode()
        return self._request("POST", self._model_path("/attributions"), body,
                             {"Content-Type": "application/json"}, query, on_progress)

    def explain(self, image, target="predicted", n_steps=50, method="gausslegendre", on_progress=None,
                **options):
        """The attribution of one image for `target` (a class name, an index or
        'predicted'). `options` are the service's other parameters: baseline,
        blur_sigma, baseline_count, smoothgrad_samples, smoothgrad_sigma, seed,
        tolerance (docs/API.md); a baseline image goes as baseline_image= (a
        path, bytes or an array). With `on_progress` (a callable), it gets a
        Progress (points done of total, time left, the IG so far) while the
        passes run."""
        data, name = image_bytes(image)
        body, _ = self._post({"image": _b64(data), "target": target}, "npz", on_progress, n_steps=n_steps,
                             method=method, **_options(options))
        return Explanation(read_npz(body), self.classes, name)

    def explain_many(self, images, targets=None, n_steps=50, method="gausslegendre", **options):
        """Several images in one request, each with its own target (default:
        each image's predicted class). Workers compute them in parallel."""
        encoded = [image_bytes(i) for i in images]
        targets = list(targets) if targets is not None else ["predicted"] * len(encoded)
        if len(targets) != len(encoded):
            raise ValueError(f"{len(encoded)} images but {len(targets)} targets: give one target per image")
        inputs = [{"image": _b64(d), "target": t, "name": n} for (d, n), t in zip(encoded, targets)]
        body, headers = self._post({"inputs": inputs}, "npz", n_steps=n_steps, method=method, **_options(options))
        return self._explanations(body, encoded[0][1])

    def explain_targets(self, image, targets=None, top_k=None, n_steps=50, method="gausslegendre", **options):
        """One image explained for several classes in one request: `targets`
        (names or indices) or the `top_k` most probable. The forward passes
        are shared, so k classes cost less than k requests. A list of
        Explanation in the order asked (top_k: most probable first)."""
        if (targets is None) == (top_k is None):
            raise ValueError("give either targets or top_k")
        data, name = image_bytes(image)
        payload = {"image": _b64(data)}
        if targets is not None:
            payload["target"] = list(targets)
        body, _ = self._post(payload, "npz", n_steps=n_steps, method=method, top_k=top_k, **_options(options))
        return self._explanations(body, name)

    def _explanations(self, body, name):
        """An npz, or a zip of them with summary.json (several results)."""
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            if "summary.json" not in archive.namelist():
                return [Explanation(read_npz(body), self.classes, name)]
            summary = json.loads(archive.read("summary.json"))
            return [Explanation(read_npz(archive.read(s["file"])), self.classes, s["name"]) for s in summary]

    def regions(self, image, target="predicted", kind="quadtree", n_steps=50, method="gausslegendre", **options):
        """Integrated Directional Gradients for regions of one image (kind
        quadtree or superpixels; region_min_side=, segments= pass through):
        the answer's "regions" dict (nodes with idg, dividend and value, and
        the S x S maps as numpy arrays; docs/API.md)."""
        data, _ = image_bytes(image)
        body, _ = self._post({"image": _b64(data), "target": target}, "json", n_steps=n_steps, method=method,
                             regions=kind, **_options(options))
        regions = json.loads(body)["regions"]
        for key in ("labels", "pixel_idg", "pixel_value"):
            regions[key] = np.array(regions[key])
        return regions

    def heatmap(self, image, target="predicted", n_steps=50, method="gausslegendre", heatmap="signed", **options):
        """The IG heatmap PNG (bytes) of one image."""
        data, _ = image_bytes(image)
        body, _ = self._post({"image": _b64(data), "target": target}, "png", n_steps=n_steps, method=method,
                             heatmap=heatmap, **_options(options))
        return body


def _options(options):
    """The options as JSON members: a baseline image becomes base64."""
    out = dict(options)
    if out.get("baseline_image") is not None:
        out["baseline_image"] = _b64(image_bytes(out["baseline_image"])[0])
    return out


def _b64(data):
    return base64.b64encode(data).decode("ascii")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_inputs(paths):
    """The images to explain, as (name, reader) pairs in a stable order: each
    file; each image under a folder (recursively; the name is its path below
    the folder's parent); each image in a zip (a CIFAR-style archive:
    test/cat/0001.png; the name is its path in the zip, under the zip's stem).
    A reader returns the image's bytes when called."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            base = os.path.dirname(os.path.abspath(path))
            for folder, _, files in sorted(os.walk(path)):
                for name in sorted(files):
                    if name.lower().endswith(IMAGE_SUFFIXES):
                        full = os.path.join(folder, name)
                        found.append((os.path.relpath(os.path.abspath(full), base), _file_reader(full)))
        elif path.lower().endswith(".zip"):
            archive = zipfile.ZipFile(path)
            lock = threading.Lock()
            stem = os.path.splitext(os.path.basename(path))[0]
            for member in sorted(archive.namelist()):
                if member.lower().endswith(IMAGE_SUFFIXES):
                    found.append((os.path.join(stem, member), _zip_reader(archive, member, lock)))
        elif os.path.isfile(path):
            found.append((os.path.basename(path), _file_reader(path)))
        else:
            raise ValueError(f"{path}: no such file, folder or zip")
    return found


def _file_reader(path):
    def read():
        with open(path, "rb") as f:
            return f.read()
    return read


def _zip_reader(archive, member, lock):
    def read():
        with lock:
            return archive.read(member)
    return read


def explain_all(client, inputs, out, target="predicted", format="npz", concurrency=None, resume=True,
                progress=None, **options):
    """Explains every (name, reader) of `inputs` (read_inputs) through
    `client`, `concurrency` requests at a time (default: the pool's worker
    count), writing out/<name's stem>.<format>; with `resume`, an output that
    exists is not computed again. Writes out/summary.csv and out/summary.json
    and returns their rows (dicts: image, output, status, target, predicted,
    probability, convergence_delta, seconds, error). With `progress` (a
    file), a line of progress, rate and time left is kept on it, moving
    while each image computes (its answer streamed)."""
    if concurrency is None:
        concurrency = max(1, len(client.workers()))
    formats = client.model().get("formats", [])
    if format not in formats:
        raise ValueError(f"format {format!r} is not one the service writes: {', '.join(formats)}")
    extension = "." + format  # the service's file names: attribution.npz, attribution.gzip, ...
    os.makedirs(out, exist_ok=True)
    rows = [None] * len(inputs)
    earlier = {}  # an earlier run's rows, for the outputs it left
    try:
        with open(os.path.join(out, "summary.json")) as f:
            earlier = {r["image"]: r for r in json.load(f) if r.get("status") in ("computed", "kept")}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    lock = threading.Lock()
    # The images in flight: the fraction of their path points done (from the
    # streamed answer), so that one long image shows progress too.
    state = {"done": 0, "computed": 0, "started": time.time(), "partial": {}}

    def report(name):
        if progress is None:
            return
        elapsed = time.time() - state["started"]
        computed = state["computed"] + sum(state["partial"].values())
        rate = computed / elapsed if elapsed > 0 and computed else 0.0
        left = (len(inputs) - state["done"] - sum(state["partial"].values())) / rate if rate > 0 else float("nan")
        shown = state["done"] + sum(state["partial"].values())
        progress.write(f"\r[{shown:>{len(str(len(inputs))) + 2}.1f}/{len(inputs)}] {rate:.2f} img/s, "
                       f"{left:.0f} s left: {name[-40:]:<40}")
        progress.flush()

    def one(index):
        name, read = inputs[index]
        output = os.path.join(out, os.path.splitext(name)[0] + extension)
        row = {"image": name, "output": output, "status": "", "target": "", "predicted": "", "probability": "",
               "convergence_delta": "", "seconds": "", "error": ""}
        if resume and os.path.exists(output) and os.path.getsize(output) > 0:
            if earlier.get(name, {}).get("output") == output:
                row.update(earlier[name])
            row["status"] = "kept"
        else:
            started = time.time()

            def advanced(p):
                with lock:
                    state["partial"][index] = p.fraction
                    report(name)

            try:
                answer, headers = client.attribute_bytes(read(), target=target, format=format,
                                                         on_progress=advanced if progress is not None else None,
                                                         **options)
                os.makedirs(os.path.dirname(output), exist_ok=True)
                with open(output + ".part", "wb") as f:
                    f.write(answer)
                os.replace(output + ".part", output)  # a killed run leaves no half-written output to keep
                row.update(status="computed", target=headers.get("X-Target-Name", ""),
                           predicted=headers.get("X-Predicted-Name", ""),
                           probability=headers.get("X-Probability", ""),
                           convergence_delta=headers.get("X-Convergence-Delta", ""),
                           seconds=f"{time.time() - started:.3f}")
            except (ServiceError, OSError) as e:
                row.update(status="error", error=str(e))
        with lock:
            rows[index] = row
            state["partial"].pop(index, None)
            state["done"] += 1
            state["computed"] += row["status"] == "computed"
            report(name)
        return row

    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(len(inputs))))
    if progress is not None:
        progress.write("\n")
    fields = ["image", "output", "status", "target", "predicted", "probability", "convergence_delta", "seconds",
              "error"]
    with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(rows, f, indent=1)
    return rows
