"""Starts and stops the real programs on free 127.0.0.1 ports for the
end-to-end tests."""

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import reference_models as rm

BIN = os.environ.get("INTGRADS_BIN", os.path.join(rm.REPO, "build", "bin"))
# Programs built with AddressSanitizer run several times slower (.ci/sanitize
# sets INTGRADS_SANITIZED): the waits for an answer that depend on it scale.
SLOWDOWN = 4 if os.environ.get("INTGRADS_SANITIZED") else 1


_KEYS = []


def keys():
    """The folder of the worker channel's key pairs the tests use (gateway.key,
    gateway.pub, worker.key, worker.pub), made once per process by
    intgrads-keygen."""
    if not _KEYS:
        folder = tempfile.mkdtemp(prefix="intgrads-keys-")
        atexit.register(shutil.rmtree, folder, True)
        subprocess.run([os.path.join(BIN, "intgrads-keygen"), os.path.join(folder, "gateway"),
                        os.path.join(folder, "worker")], check=True, capture_output=True)
        _KEYS.append(folder)
    return _KEYS[0]


def gateway_key_flags():
    """A gateway's CURVE flags: its secret key, the workers' public key."""
    return ["--secret-key", os.path.join(keys(), "gateway.key"), "--worker-keys", os.path.join(keys(), "worker.pub")]


def worker_key_flags():
    """A worker's CURVE flags: its secret key, the gateway's public key."""
    return ["--secret-key", os.path.join(keys(), "worker.key"), "--gateway-key", os.path.join(keys(), "gateway.pub")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=120):
    """(status, headers, body bytes); never raises for an HTTP error status."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_until(predicate, timeout=60.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def server_timing(header):
    """The gateway's Server-Timing header as {name: ms}: 'gateway;dur=1.2, compute;dur=80.0' ->
    {"gateway": 1.2, "compute": 80.0}."""
    return {name.strip(): float(dur) for name, dur in (part.split(";dur=") for part in header.split(","))}


class Gateway:
    """A gateway on free ports, its worker channel under CURVE (keys());
    as a context manager (`with Gateway() as g:`) it stops the workers it
    started, then itself, however the block ends."""

    def __init__(self, *extra, heartbeat_ms=200):
        self.port = free_port()
        self.worker_port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.worker_port}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.heartbeat_ms = heartbeat_ms
        self.started = []
        self.process = subprocess.Popen(
            [os.path.join(BIN, "intgrads-gateway"), "--host", "127.0.0.1", "--port", str(self.port),
             "--bind-workers", self.endpoint, "--heartbeat-ms", str(heartbeat_ms),
             *([] if "--insecure-workers" in extra else gateway_key_flags()), *extra])
        wait_until(lambda: http("GET", self.url + "/healthz", timeout=2)[0] == 200, what="gateway /healthz")

    def start_worker(self, *flags, threads=1, quiet=False):
        """A worker for this gateway (the default model unless `flags` name
        another), its heartbeat matched to the gateway's; wait_ready() waits
        for it."""
        worker = subprocess.Popen([os.path.join(BIN, "intgrads-worker"), "--connect", self.endpoint, "--cpu",
                                   "--threads", str(threads), "--heartbeat-ms", str(self.heartbeat_ms),
                                   *worker_key_flags(), *flags],
                                  stderr=subprocess.DEVNULL if quiet else None)
        self.started.append(worker)
        return worker

    def wait_ready(self, timeout=60.0):
        wait_until(lambda: http("GET", self.url + "/readyz", timeout=2)[0] == 200, timeout=timeout, what="/readyz")

    def workers(self):
        return json.loads(http("GET", self.url + "/v1/workers")[2])["workers"]

    def stop(self):
        stop(self.process)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for worker in self.started:
            stop(worker)
        self.stop()


def start_worker(endpoint, family, checkpoint, *extra, heartbeat_ms=200):
    flag = "-bp" if family == "bit" else "-lp"
    return subprocess.Popen([os.path.join(BIN, "intgrads-worker"), "--connect", endpoint, flag, checkpoint, "--cpu",
                             "--threads", "1", "--heartbeat-ms", str(heartbeat_ms), *worker_key_flags(), *extra])


def stop(process, sig=signal.SIGTERM, timeout=30):
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
