"""Attacks on the running service, each as an attacker would make it: raw
sockets, hand-made PNGs, a ZeroMQ peer (python3-zmq) on the worker channel,
a fake gateway. Each was found by an adversarial test of an earlier build;
docs/RELIABILITY.md lists them with the tests that hold them."""

import json
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest
import zlib

import zmq

from service import (BIN, SLOWDOWN, Gateway, free_port, http, keys, stop, wait_until,
                     worker_key_flags)


def png(width, height, channels=3):
    """A PNG of zeros, as small as zlib makes it (4096 x 4096: 49 KB)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    colour = {1: 0, 3: 2, 4: 6}[channels]
    row = b"\0" * (1 + width * channels)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)) +
            chunk(b"IDAT", data) + chunk(b"IEND", b""))


def multipart(parts, boundary="XyZzY"):
    """(content type, body) of form parts given as (name, file name or None, bytes)."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


def exchange(port, request, after=b"", timeout=60):
    """Sends `request` (then `after`, while the answer may be on its way) on a
    new connection and reads until the gateway closes it: (status, headers
    as a dict, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        try:
            s.sendall(after)
        except OSError:  # the gateway refused and closed first
            pass
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


class HealthWatch:
    """Asks /healthz every 50 ms on a thread of its own while a block runs;
    `slowest` is the longest any answer took (a failure counts as forever)."""

    def __init__(self, url):
        self.url = url
        self.slowest = 0.0
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def _watch(self):
        while not self._stop.is_set():
            started = time.time()
            try:
                ok = http("GET", self.url + "/healthz", timeout=30)[0] == 200
            except OSError:
                ok = False
            self.slowest = max(self.slowest, time.time() - started if ok else float("inf"))
            self.answers += 1
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class Heads(unittest.TestCase):
    def test_a_head_that_never_ends_is_a_431_and_stops_no_one(self):
        """Two clients each send a 12 MB header line that never ends. Pistache
        parsed an incomplete head again from its start with every piece: the
        two kept the gateway busy for 152 s of CPU, /healthz went unanswered
        for 140 s, and past 64 KiB Pistache answered a plain-text 500."""
        with Gateway("--insecure-workers") as gateway:
            results = []

            def attack():
                head = b"GET /healthz HTTP/1.1\r\nX-Long: "
                results.append(exchange(gateway.port, head, b"a" * (12 << 20)))

            with HealthWatch(gateway.url) as health:
                attackers = [threading.Thread(target=attack) for _ in range(2)]
                for a in attackers:
                    a.start()
                for a in attackers:
                    a.join(120)
            self.assertEqual(len(results), 2)
            for status, headers, body in results:
                self.assertEqual(status, 431)
                self.assertEqual(headers.get("connection"), "Close")
                self.assertIn("no blank line within 65536 bytes", json.loads(body)["error"])
            self.assertGreater(health.answers, 0)
            self.assertLess(health.slowest, 1.0 * SLOWDOWN)
            # A long head within the limit is read as ever.
            status, _, _ = exchange(gateway.port, b"GET /healthz HTTP/1.1\r\nX-Long: " + b"a" * 60000 +
                                    b"\r\nConnection: close\r\n\r\n")
            self.assertEqual(status, 200)


class Bodies(unittest.TestCase):
    def test_chunk_sizes_over_the_limit_are_a_413_and_a_close(self):
        """A chunk size of 2^64 - 1 was a plain-text 400 that left the
        connection open; one of 1 GiB made Pistache reserve 1 GiB."""
        with Gateway("--insecure-workers", "--max-body-bytes", "1000000") as gateway:
            head = b"POST /model/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            for size in (b"ffffffffffffffff", b"40000000", b"f4241"):
                status, headers, body = exchange(gateway.port, head + size + b"\r\n", b"x" * 100000)
                self.assertEqual(status, 413, size)
                self.assertEqual(headers.get("connection"), "Close")
                self.assertIn("over the limit of 1000000 bytes", json.loads(body)["error"])
            self.assertLess(peak_rss_kib(gateway.process.pid), 200 * 1024)
            self.assertEqual(http("GET", gateway.url + "/healthz")[0], 200)

    def test_pistaches_own_answers_are_json_and_close(self):
        """A method a path does not serve was Pistache's plain-text 405, and
        the connection stayed open; HEAD was a 405 on every GET route."""
        with Gateway("--insecure-workers") as gateway:
            status, headers, body = exchange(gateway.port, b"GET /model/ HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(status, 405)
            self.assertEqual(headers.get("allow"), "POST")
            self.assertEqual(headers.get("connection"), "Close")
            self.assertIn("answers POST", json.loads(body)["error"])
            for method in (b"DELETE", b"PUT", b"OPTIONS", b"PATCH", b"TRACE"):
                status, headers, body = exchange(gateway.port, method + b" /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertEqual(status, 405, method)
                self.assertEqual(headers.get("allow"), "GET, HEAD")
                self.assertIn("error", json.loads(body))
            status, headers, body = exchange(gateway.port, b"PUT /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(status, 404)
            self.assertIn("no route", json.loads(body)["error"])
            # HEAD on a GET route: the head of the GET's answer, no body.
            get = http("GET", gateway.url + "/openapi.json")
            head = http("HEAD", gateway.url + "/openapi.json")
            self.assertEqual(head[0], 200)
            self.assertEqual(head[2], b"")
            self.assertEqual(int(head[1]["Content-Length"]), len(get[2]))
            self.assertEqual(head[1]["Content-Type"], get[1]["Content-Type"])
            # A HEAD request's answer on a kept-alive connection has no body to confuse the next answer.
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as s:
                s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
                first = s.recv(4096)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                rest = b""
                while chunk := s.recv(4096):
                    rest += chunk
            self.assertTrue(first.startswith(b"HTTP/1.1 200") and first.endswith(b"\r\n\r\n"), first)
            self.assertTrue(rest.startswith(b"HTTP/1.1 200"), rest)
            self.assertTrue(rest.endswith(b'{"status":"ok"}'), rest)

    def test_a_client_too_slow_is_answered_408_in_json(self):
        with Gateway("--insecure-workers", "--client-timeout-ms", "500") as gateway:
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as s:
                started = time.time()
                s.sendall(b"POST /model/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
            self.assertLess(time.time() - started, 3)
            self.assertTrue(answer.startswith(b"HTTP/1.1 408"), answer)
            self.assertIn(b"Connection: Close", answer)
            self.assertIn("--client-timeout-ms", json.loads(answer.partition(b"\r\n\r\n")[2])["error"])


class Decoding(unittest.TestCase):
    def test_images_over_the_request_budget_are_refused_from_their_headers(self):
        """16 PNGs of 4096 x 4096 (49 KB each, zeros) in one 785 KB request
        took the gateway to 1.65 GB and kept /healthz waiting 6.7 s."""
        big = png(4096, 4096)
        with Gateway("--insecure-workers") as gateway:
            content_type, body = multipart([("image", f"{i}.png", big) for i in range(16)])
            with HealthWatch(gateway.url) as health:
                started = time.time()
                status, _, answer = http("POST", gateway.url + "/v1/attributions", body,
                                         {"Content-Type": content_type})
                elapsed = time.time() - started
            self.assertEqual(status, 413)
            self.assertIn("--max-request-pixels", json.loads(answer)["error"])
            self.assertLess(elapsed, 2 * SLOWDOWN)
            self.assertLess(health.slowest, 1.0 * SLOWDOWN)
            self.assertLess(peak_rss_kib(gateway.process.pid), 150 * 1024)

    def test_one_baseline_image_per_request(self):
        """Sixty baseline_image parts (2.9 MB) cost 8.3 s of the gateway's CPU
        before the 422, and were not counted by --max-images."""
        with Gateway("--insecure-workers") as gateway:
            parts = [("image", "x.png", png(8, 8))] + [("baseline_image", "b.png", png(4096, 4096))] * 60
            content_type, body = multipart(parts)
            started = time.time()
            status, _, answer = http("POST", gateway.url + "/v1/attributions?baseline=image", body,
                                     {"Content-Type": content_type})
            self.assertLess(time.time() - started, 2 * SLOWDOWN)
            self.assertEqual(status, 422)
            self.assertIn("baseline_image: given twice", json.loads(answer)["error"])
            # The baseline image counts once for each image it goes with.
            content_type, body = multipart([("image", "a.png", png(8, 8)), ("image", "b.png", png(8, 8)),
                                            ("baseline_image", "b.png", png(4096, 4096))])
            status, _, answer = http("POST", gateway.url + "/v1/attributions?baseline=image", body,
                                     {"Content-Type": content_type})
            self.assertEqual(status, 413)
            self.assertIn("--max-request-pixels", json.loads(answer)["error"])

    def test_the_gateway_wide_budget_answers_503_with_retry_after(self):
        with Gateway("--insecure-workers", "--decode-memory-mb", "40", "--request-timeout-ms", "500") as gateway:
            # 4096 x 4096 x 3 bytes: 48 MiB of pixels, within the request's limits, over the gateway's budget.
            status, headers, answer = http("POST", gateway.url + "/v1/attributions", png(4096, 4096),
                                           {"Content-Type": "image/png"})
            self.assertEqual(status, 503)
            self.assertEqual(headers.get("Retry-After"), "1")
            self.assertIn("--decode-memory-mb", json.loads(answer)["error"])
            # What fits is read (no worker here: a 503 for that, after the image was decoded).
            status, _, answer = http("POST", gateway.url + "/v1/attributions", png(2048, 2048),
                                     {"Content-Type": "image/png"})
            self.assertNotIn("--decode-memory-mb", json.loads(answer)["error"])

    def test_decoding_happens_off_the_http_thread(self):
        """With one HTTP thread, /healthz is answered within a second while
        clients keep it fed with images to decode (four 4096 x 4096 PNGs a
        request; on the HTTP thread, /healthz waited seconds behind them)."""
        with Gateway("--insecure-workers", "--threads", "1", "--request-timeout-ms", "100", "--max-request-pixels",
                     str(4 << 24), "--decode-memory-mb", "2048") as gateway:
            content_type, body = multipart([("image", f"{i}.png", png(4096, 4096)) for i in range(4)])
            stop_sending = threading.Event()
            sent = []

            def flood():
                while not stop_sending.is_set():
                    http("POST", gateway.url + "/v1/attributions", body, {"Content-Type": content_type}, timeout=60)
                    sent.append(1)

            floods = [threading.Thread(target=flood) for _ in range(4)]
            with HealthWatch(gateway.url) as health:
                for f in floods:
                    f.start()
                time.sleep(4)
                stop_sending.set()
                for f in floods:
                    f.join(120)
            self.assertGreater(len(sent), 3)
            self.assertLess(health.slowest, 1.0 * SLOWDOWN)


class WorkerChannel(unittest.TestCase):
    """The worker channel under CURVE, against peers written with python3-zmq."""

    def test_a_stranger_cannot_join_or_be_sent_work(self):
        with Gateway("--request-timeout-ms", "1000") as gateway:
            context = zmq.Context()
            self.addCleanup(context.destroy, 0)
            ready = json.dumps({"v": 3, "type": "ready", "model": "default", "family": "lanet", "variant": "x",
                                "device": "cpu", "classes": ["a", "b"], "input_size": 32}).encode()
            peers = []
            # No keys; keys of its own; and the admitted worker's public key without its secret key.
            plain = context.socket(zmq.DEALER)
            peers.append(plain)
            own_public, own_secret = zmq.curve_keypair()
            gateway_public = open(os.path.join(keys(), "gateway.pub")).read().split()[-1].encode()
            for public, secret in ((own_public, own_secret),
                                   (open(os.path.join(keys(), "worker.pub")).read().split()[-1].encode(),
                                    own_secret)):
                peer = context.socket(zmq.DEALER)
                peer.curve_serverkey = gateway_public
                peer.curve_publickey = public
                peer.curve_secretkey = secret
                peers.append(peer)
            for peer in peers:
                peer.linger = 0
                peer.connect(gateway.endpoint)
                peer.send(ready)
            time.sleep(1.0)
            self.assertEqual(gateway.workers(), [])
            # A request finds no worker: it is never sent to a stranger.
            body = json.dumps({"img_data": [[[1, 2, 3]]], "target_class": "cat", "n_steps": 2}).encode()
            self.assertEqual(http("POST", gateway.url + "/model/", body)[0], 503)
            for peer in peers:
                self.assertEqual(peer.poll(200), 0)  # not even a heartbeat
            # The admitted worker's keys, spoken by the same library: it joins.
            member = context.socket(zmq.DEALER)
            member.linger = 0
            member.curve_serverkey = gateway_public
            secret = open(os.path.join(keys(), "worker.key")).read().split()[-1].encode()
            member.curve_secretkey = secret
            member.curve_publickey = zmq.curve_public(secret)
            member.connect(gateway.endpoint)
            member.send(ready)
            wait_until(lambda: len(gateway.workers()) == 1, timeout=10, what="the admitted worker")

    def test_a_worker_tells_a_fake_gateway_nothing_and_computes_nothing_for_it(self):
        """A worker sent its token in clear text to whatever listened at its
        --connect address, then computed that listener's requests."""
        port = free_port()
        context = zmq.Context()
        self.addCleanup(context.destroy, 0)
        # First a plain TCP listener: every byte the worker sends.
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        self.addCleanup(listener.close)
        env = dict(os.environ, INTGRADS_TOKEN="the-http-token")
        worker = subprocess.Popen([os.path.join(BIN, "intgrads-worker"), "--connect", f"tcp://127.0.0.1:{port}",
                                   "--threads", "1", "--heartbeat-ms", "200", *worker_key_flags()], env=env,
                                  stderr=subprocess.DEVNULL)
        self.addCleanup(stop, worker)
        listener.settimeout(60)
        connection, _ = listener.accept()
        connection.settimeout(0.5)
        seen = b""
        deadline = time.time() + 3
        while time.time() < deadline:
            try:
                chunk = connection.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            seen += chunk
        connection.close()
        listener.close()
        # ZMTP's signature, and nothing else until a gateway answers it.
        self.assertNotIn(b"the-http-token", seen)
        self.assertTrue(seen.startswith(b"\xff"), seen)
        self.assertLessEqual(len(seen), 64, seen)
        # Then fake gateways speaking ZeroMQ: in plain, and in CURVE with keys of their own.
        for fake_keys in (None, zmq.curve_keypair()):
            router = context.socket(zmq.ROUTER)
            router.linger = 0
            if fake_keys:
                router.curve_server = True
                router.curve_secretkey = fake_keys[1]
            # The port is the worker's; the last listener on it may take a moment to go.
            for _ in range(100):
                try:
                    router.bind(f"tcp://127.0.0.1:{port}")
                    break
                except zmq.ZMQError:
                    time.sleep(0.1)
            self.assertEqual(router.poll(3000), 0, "the worker spoke to a fake gateway")
            router.close()
        self.assertIsNone(worker.poll())  # it keeps trying, harmlessly

    def test_a_frame_over_the_limit_costs_the_gateway_nothing(self):
        """Any peer on the worker port could send a 300 MB frame; the
        gateway's memory grew by 720 MB. ZMQ_MAXMSGSIZE now drops the peer
        from the frame's size, before its bytes are read. (Without CURVE, as
        with CURVE a stranger never gets that far.)"""
        with Gateway("--insecure-workers", "--max-reply-bytes", str(64 << 20)) as gateway:
            before = peak_rss_kib(gateway.process.pid)
            context = zmq.Context()
            self.addCleanup(context.destroy, 0)
            peer = context.socket(zmq.DEALER)
            peer.linger = 0
            peer.sndhwm = 0
            peer.connect(gateway.endpoint)
            peer.send(b"x" * (300 << 20))
            time.sleep(2)
            self.assertLess(peak_rss_kib(gateway.process.pid) - before, 100 * 1024)
            self.assertEqual(http("GET", gateway.url + "/healthz")[0], 200)

    def test_keygen_writes_a_private_secret_key_and_never_overwrites(self):
        folder = tempfile.mkdtemp()
        run = subprocess.run([os.path.join(BIN, "intgrads-keygen"), os.path.join(folder, "w")], capture_output=True,
                             text=True, check=True)
        self.assertEqual(os.stat(os.path.join(folder, "w.key")).st_mode & 0o777, 0o600)
        with open(os.path.join(folder, "w.pub")) as f:
            public = f.read().split()[-1]
        self.assertEqual(len(public), 40)
        self.assertIn(public, run.stdout)
        with open(os.path.join(folder, "w.key")) as f:
            self.assertEqual(zmq.curve_public(f.read().split()[-1].encode()).decode(), public)
        again = subprocess.run([os.path.join(BIN, "intgrads-keygen"), os.path.join(folder, "w")],
                               capture_output=True, text=True)
        self.assertEqual(again.returncode, 2)
        self.assertIn("File exists", again.stderr)


def hostile_checkpoints(folder):
    """{name: path} of checkpoints an attacker would make: a view whose size
    times stride overflows int64 (340 bytes), and a stride-0 view of
    (1000000, 256) over 256 floats (1 KB of data)."""
    import io
    import zipfile

    import torch

    def save(tensor):
        buffer = io.BytesIO()
        torch.save({"classifier.weight": tensor}, buffer)
        return buffer.getvalue()

    paths = {}
    original = save(torch.zeros(1).as_strided((3, 5), (0, 0)))
    with zipfile.ZipFile(io.BytesIO(original)) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    two_to_40 = b"\x8a\x06\x00\x00\x00\x00\x00\x01"
    pickled = entries["archive/data.pkl"]
    assert b"K\x03K\x05\x86" in pickled and b"K\x00K\x00\x86" in pickled
    pickled = pickled.replace(b"K\x03K\x05\x86", two_to_40 * 2 + b"\x86").replace(b"K\x00K\x00\x86",
                                                                                  two_to_40 * 2 + b"\x86")
    entries["archive/data.pkl"] = pickled
    paths["overflow"] = os.path.join(folder, "overflow.pth")
    with zipfile.ZipFile(paths["overflow"], "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    paths["stride0"] = os.path.join(folder, "stride0.pth")
    with open(paths["stride0"], "wb") as f:
        f.write(save(torch.zeros(256).as_strided((1000000, 256), (0, 1))))
    return paths


class Checkpoints(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.mkdtemp()
        self.checkpoints = hostile_checkpoints(self.folder)

    def test_a_hostile_checkpoint_is_a_one_line_refusal(self):
        """The overflowing view made LibTorch throw inside the loader and the
        worker aborted (exit 134); the stride-0 view loaded and served with
        1.29 GB resident."""
        for name, expected in (("overflow", "over 2^63 elements"), ("stride0", "256000000 elements over a storage")):
            for argv in ([os.path.join(BIN, "intgrads-worker"), "--connect", "ipc:///nonexistent/x", "-lp",
                          self.checkpoints[name]],
                         [os.path.join(BIN, "intgrads-images"), "attribute", "-lp", self.checkpoints[name], "--input",
                          "/nonexistent.json", "--output", os.path.join(self.folder, "out.gzip")]):
                run = subprocess.run(argv, capture_output=True, text=True, timeout=120)
                self.assertEqual(run.returncode, 2, (name, argv[0], run.stderr))
                self.assertIn(expected, run.stderr, name)
                self.assertEqual(len(run.stderr.strip().splitlines()), 1, run.stderr)

    def test_the_launcher_stops_when_a_worker_dies_before_it_is_ready(self):
        """With the overflowing checkpoint the launcher restarted its
        aborting worker for ever (7 times in 10 s)."""
        run = subprocess.run([os.path.join(BIN, "intgrads-images"), "-lp", self.checkpoints["overflow"], "--port",
                              str(free_port())], capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 2, run.stderr)
        self.assertEqual(run.stderr.count("intgrads-worker: "), 1, run.stderr)  # one try, one line
        self.assertIn("over 2^63 elements", run.stderr)
        self.assertIn("worker 0 failed to start (exit status 2); stopping", run.stderr)

    def launcher_with(self, worker_script):
        """intgrads-images copied beside the real gateway and a stand-in
        intgrads-worker (a shell script), started; (process, folder)."""
        folder = tempfile.mkdtemp(dir=self.folder)
        for program in ("intgrads-images", "intgrads-gateway"):
            target = os.path.join(folder, program)
            with open(os.path.join(BIN, program), "rb") as src, open(target, "wb") as dst:
                dst.write(src.read())
            os.chmod(target, 0o755)
        worker = os.path.join(folder, "intgrads-worker")
        with open(worker, "w") as f:
            f.write("#!/bin/sh\n" + worker_script)
        os.chmod(worker, 0o755)
        process = subprocess.Popen([os.path.join(folder, "intgrads-images"), "--port", str(free_port())],
                                   stderr=subprocess.PIPE, text=True, cwd=folder)
        return process, folder

    def test_a_crash_before_ready_stops_the_launcher_and_one_after_restarts_the_worker(self):
        # Killed by a signal before it says it is ready: a failed start, tried once.
        process, folder = self.launcher_with('echo started >> "$(dirname "$0")/starts"\nkill -ABRT $$\n')
        _, stderr = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 2, stderr)
        self.assertIn("worker 0 failed to start (killed by signal 6 (Aborted)); stopping", stderr)
        with open(os.path.join(folder, "starts")) as f:
            self.assertEqual(f.read().count("started"), 1)
        # Ready (a byte on --ready-fd), then dead: restarted, as a worker that dies serving is.
        process, folder = self.launcher_with('echo started >> "$(dirname "$0")/starts"\nprintf r >&3\n'
                                             'sleep 0.2\nkill -ABRT $$\n')
        starts = os.path.join(folder, "starts")
        wait_until(lambda: os.path.exists(starts) and open(starts).read().count("started") >= 3, timeout=30,
                   what="restarts")
        process.terminate()
        _, stderr = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 0, stderr)
        self.assertIn("worker 0 died (killed by signal 6 (Aborted)); restarting it", stderr)


if __name__ == "__main__":
    unittest.main()
