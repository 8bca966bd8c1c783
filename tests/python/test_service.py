"""End to end: the real gateway and workers as processes on 127.0.0.1, the
original README's exact curl command, its Python snippet to read the answer,
bad input, and the one-command launcher."""

import gzip
import json
import os
import shutil
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import torch

import reference_models as rm
from service import (BIN, Gateway, free_port, http, keys, server_timing, start_worker, stop, wait_until,
                     worker_key_flags)

CURL = shutil.which("curl")


def raw_exchange(port, request, body_after=b""):
    """(status, the JSON error's message): sends the request, then the rest of
    its body while the answer may already be coming, then reads until the
    gateway closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(request)
        s.sendall(body_after)  # read and dropped by the gateway after a refusal, never a reset
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]


def trickle(connection, between=lambda: None, limit_s=15):
    """Sends a space every 0.5 s (calling `between` before each wait) until
    the gateway answers, closes the connection or limit_s pass; returns the
    answer's first bytes, or b""."""
    started = time.time()
    while time.time() - started < limit_s:
        between()
        readable, _, _ = select.select([connection], [], [], 0.5)
        if readable:
            return connection.recv(4096)
        try:
            connection.sendall(b" ")
        except OSError:  # closed by the gateway
            break
    return b""


def readme_curl(port, cwd):
    """The seed README's command, word for word but the port."""
    command = (f'curl http://localhost:{port}/model/ --data @input_json_file.json --output saved_file.gzip '
               f'-H "Content-Type:application/json; chartset=utf-8"')
    return subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True, timeout=600)


def post_while_busy(gateway, body):
    """Posts `body` from a thread and returns once a worker is computing it:
    (thread, answers) with answers["r"] the (status, headers, body) when done,
    or the exception the client raised, so that a failure names it."""
    answers = {}

    def post():
        try:
            answers["r"] = http("POST", gateway.url + "/model/", body)
        except Exception as e:  # noqa: BLE001 (reported by the test's assertion)
            answers["r"] = (repr(e), {}, b"")

    thread = threading.Thread(target=post)
    thread.start()
    wait_until(lambda: any(w["state"] == "busy" for w in gateway.workers()), what="a busy worker")
    return thread, answers


class Service(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = cls.tmp.name
        cls.refs = {name: rm.reference(name) for name in ("lanet-c16-l8", "bit-m-r50x1")}
        if any(r is None for r in cls.refs.values()):
            raise unittest.SkipTest("../shared/spec/reference is missing")
        cls.checkpoints = {}
        for name, ref in cls.refs.items():
            path = os.path.join(cls.dir, name + ".pth")
            rm.write_checkpoint(ref, path, legacy=(ref["family"] == "bit"))  # both file formats in play
            cls.checkpoints[name] = path

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def serve(self, name, *gateway_flags):
        gateway = Gateway(*gateway_flags)
        self.addCleanup(gateway.stop)
        worker = start_worker(gateway.endpoint, self.refs[name]["family"], self.checkpoints[name])
        self.addCleanup(stop, worker)
        wait_until(lambda: http("GET", gateway.url + "/readyz", timeout=2)[0] == 200, what="a ready worker")
        return gateway, worker

    def check_readme_flow(self, name):
        if CURL is None:
            self.skipTest("curl is not installed")
        ref = self.refs[name]
        gateway, _ = self.serve(name)
        work = os.path.join(self.dir, name)
        os.makedirs(work, exist_ok=True)
        rm.write_request(ref, os.path.join(work, "input_json_file.json"))
        result = readme_curl(gateway.port, work)
        self.assertEqual(result.returncode, 0, result.stderr)
        d = rm.load_gzip_dict(os.path.join(work, "saved_file.gzip"))
        self.assertEqual(list(d.keys()), ["integrated_directional_grads", "step_sizes", "intermediates",
                                          "integrated_grads", "output", "target_class"])
        captum = torch.tensor(ref["expected_integrated_grads"]["integrated_grads_chw"]).unsqueeze(0)
        tolerance = 1e-3 if ref["family"] == "bit" else 1.5e-2  # see tests/worker/reference_test.cc
        self.assertLess((d["integrated_grads"] - captum).abs().max().item(), tolerance * captum.abs().max().item())
        # The service sends the bytes the offline command writes.
        offline = os.path.join(work, "offline.gzip")
        flag = "--bit-path" if ref["family"] == "bit" else "--lanet-path"
        subprocess.run([os.path.join(BIN, "intgrads-images"), "attribute", flag, self.checkpoints[name], "--input",
                        os.path.join(work, "input_json_file.json"), "--output", offline, "--threads", "1"],
                       check=True, capture_output=True)
        with gzip.open(offline) as a, gzip.open(os.path.join(work, "saved_file.gzip")) as b:
            self.assertEqual(a.read(), b.read())

    def test_readme_flow_lanet(self):
        self.check_readme_flow("lanet-c16-l8")

    def test_readme_flow_bit(self):
        self.check_readme_flow("bit-m-r50x1")

    def test_headers_health_and_bad_input(self):
        gateway, _ = self.serve("lanet-c16-l8")
        ref = self.refs["lanet-c16-l8"]
        good = json.dumps({"img_data": ref["image_uint8_hwc"], "target_class": "cat", "n_steps": 8}).encode()

        # /healthz answers at once while an attribution runs.
        slow = json.dumps({"img_data": ref["image_uint8_hwc"], "target_class": "cat", "n_steps": 300}).encode()
        thread, answers = post_while_busy(gateway, slow)
        started = time.time()
        self.assertEqual(http("GET", gateway.url + "/healthz", timeout=5)[0], 200)
        self.assertLess(time.time() - started, 1.0)
        thread.join()
        self.assertEqual(answers["r"][0], 200)

        status, headers, body = http("POST", gateway.url + "/model", good,
                                     {"Content-Type": "application/json; chartset=utf-8"})
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "application/gzip")
        self.assertIn('filename="returned_gradients.gzip"', headers["Content-Disposition"])
        self.assertIn("X-Convergence-Delta", headers)
        # Server-Timing, in ms: reading the request (decode), waiting for a worker (queue) and in its
        # queue (wait), the worker's time (compute: X-Compute-Seconds) and its parts (input, passes, the
        # copy to the host, torch.save, gzip), and the rest in the gateway; together, the request's time.
        timing = server_timing(headers["Server-Timing"])
        self.assertEqual(list(timing), ["decode", "queue", "wait", "prepare", "attribute", "copy", "encode", "gzip",
                                        "compute", "gateway"])
        self.assertTrue(all(v >= 0.0 for v in timing.values()), timing)
        self.assertGreater(timing["gateway"], 0.0)
        self.assertGreater(timing["decode"], 0.0)
        self.assertAlmostEqual(timing["compute"], 1000 * float(headers["X-Compute-Seconds"]), delta=0.01)
        parts = [timing[k] for k in ("prepare", "attribute", "encode", "gzip")]
        self.assertTrue(all(p > 0.0 for p in parts), timing)
        self.assertLessEqual(sum(parts) + timing["copy"], timing["compute"] + 0.01)
        self.assertGreater(timing["attribute"], max(timing["prepare"], timing["encode"], timing["gzip"]))
        # Each stage also in /metrics.
        metrics = http("GET", gateway.url + "/metrics")[2].decode()
        for stage in timing:
            self.assertIn(f'intgrads_stage_seconds_count{{stage="{stage}"}} ', metrics)
        self.assertEqual(body[:2], b"\x1f\x8b")

        bad_bodies = {
            b"{not json": "JSON",
            b"[]": "object",
            b'{"target_class": "cat"}': "img_data",
            b'{"img_data": [[[1,2,3]]]}': "target_class",
            b'{"img_data": [], "target_class": "cat"}': "empty",
            b'{"img_data": [[[1,2,3]],[[1,2,3],[1,2,3]]], "target_class": "cat"}': "ragged",
            b'{"img_data": [[[1,2,300]]], "target_class": "cat"}': "0..255",
            b'{"img_data": [[[1,2,3.5]]], "target_class": "cat"}': "integer",
            b'{"img_data": [[[1,2,3]]], "target_class": "unicorn"}': "unicorn",
            b'{"img_data": [[[1,2,3]]], "target_class": "cat", "method": "simpson"}': "method",
            b'{"img_data": [[[1,2,3]]], "target_class": "cat", "n_steps": 0}': "n_steps",
            b'{"img_data": [[[1,2,3]]], "target_class": "cat", "n_steps": NaN}': "JSON",
            b"[" * 50000 + b"]" * 50000: "nested",
            b'{"img_data": [[[1,2,3]]], "target_class": "\xff\xfe\xe2\x82"}': "JSON",
            ('{"img_data": [[[1,2,3]]], "target_class": "' + "\u00e9\u732b" * 3000 + '"}').encode(): "unknown class",
        }
        for body, mention in bad_bodies.items():
            status, headers, answer = http("POST", gateway.url + "/model/", body)
            self.assertGreaterEqual(status, 400, body[:60])
            self.assertLess(status, 500, body[:60])
            self.assertIn(mention, json.loads(answer)["error"], body[:60])
            # A body that is not JSON is a 400, as the original answered; valid JSON with bad fields a 422.
            self.assertEqual(status, 400 if mention == "JSON" else 422, body[:60])
        # Grey and RGBA images are accepted (the original failed on them).
        for image in ([[7] * 5] * 6, [[[1, 2, 3, 255]] * 5] * 6):
            body = json.dumps({"img_data": image, "target_class": "cat", "n_steps": 4}).encode()
            self.assertEqual(http("POST", gateway.url + "/model/", body)[0], 200)
        self.assertEqual(http("GET", gateway.url + "/nowhere")[0], 404)
        # Still serving after all that.
        self.assertEqual(http("POST", gateway.url + "/model/", good)[0], 200)
        served = gateway.workers()[0]
        self.assertEqual(served["family"], "lanet")
        self.assertGreaterEqual(served["requests_served"], 3)

    def test_body_over_the_limit(self):
        gateway = Gateway("--max-body-bytes", "1000")
        self.addCleanup(gateway.stop)
        status, _, answer = http("POST", gateway.url + "/model/", b'{"img_data": [' + b"1," * 2000 + b'1]}')
        self.assertEqual(status, 413)
        self.assertIn("--max-body-bytes", json.loads(answer)["error"])

    def test_a_compressed_body_is_refused_as_such(self):
        gateway = Gateway()
        self.addCleanup(gateway.stop)
        body = gzip.compress(b'{"img_data": [[[1, 2, 3]]], "target_class": "cat"}')
        status, _, answer = http("POST", gateway.url + "/model/", body,
                                 {"Content-Type": "application/json", "Content-Encoding": "gzip"})
        self.assertEqual(status, 415)
        self.assertIn("send them uncompressed", json.loads(answer)["error"])

    def test_a_body_far_over_the_limit_is_refused_from_its_head_in_json(self):
        gateway = Gateway("--max-body-bytes", "1000", "--token", "s3cret")
        self.addCleanup(gateway.stop)
        head = b"POST /models/any/model HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"

        cases = {
            # Five megabytes that Pistache would have buffered up to its limit, then refused in plain text.
            "declared": (head + b"Content-Length: 5000000\r\n\r\n", b"1" * 5000000),
            # Pistache reserved the declared size at once: a 500 "std::bad_alloc", then "stoull".
            "huge": (head + b"Content-Length: 99999999999999999\r\n\r\n{}", b""),
            "overflowing": (head + b"Content-Length: 18446744073709551617\r\n\r\n{}", b""),
            # No size declared: refused when the bytes would overflow Pistache's buffer.
            "chunked": (head + b"Transfer-Encoding: chunked\r\n\r\n",
                        b"".join(b"1000\r\n" + b"1" * 4096 + b"\r\n" for _ in range(100))),
        }
        for name, (request, body_after) in cases.items():
            status, error = raw_exchange(gateway.port, request, body_after)
            self.assertEqual(status, 413, name)
            self.assertIn("over the limit of 1000 bytes (raise with --max-body-bytes)", error, name)
        self.assertIn("5000000 bytes", raw_exchange(gateway.port, *cases["declared"])[1])
        # Without the token, nothing about the body is said.
        unauthorized = b"POST /model/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n"
        self.assertEqual(raw_exchange(gateway.port, unauthorized)[0], 401)
        # curl stops at the answer to its Expect: 100-continue.
        if CURL:
            body = os.path.join(tempfile.mkdtemp(), "big.json")
            self.addCleanup(shutil.rmtree, os.path.dirname(body))
            with open(body, "wb") as f:
                f.write(b"1" * 3000000)
            done = subprocess.run([CURL, "-s", "-H", "Authorization: Bearer s3cret", "--data-binary", "@" + body,
                                   "-w", "\n%{http_code}", gateway.url + "/model/"],
                                  capture_output=True, timeout=60)
            answer, code = done.stdout.rsplit(b"\n", 1)
            self.assertEqual(code, b"413")
            self.assertIn("--max-body-bytes", json.loads(answer)["error"])
        # Counted under their routes, and the gateway serves on.
        metrics = http("GET", gateway.url + "/metrics", headers={"Authorization": "Bearer s3cret"})[2].decode()
        self.assertIn('route="/models/{name}/model",status="413"', metrics)
        self.assertEqual(http("GET", gateway.url + "/healthz")[0], 200)

    def test_a_content_length_that_cannot_be_trusted_is_a_400(self):
        gateway = Gateway()
        self.addCleanup(gateway.stop)
        head = b"POST /model/ HTTP/1.1\r\nHost: x\r\n"
        for fields, words in ((b"Content-Length: -1\r\n", "'-1' is not a number"),  # was a 500 from Pistache
                              (b"Content-Length: 1e3\r\n", "'1e3' is not a number"),
                              (b"Content-Length: 2\r\nContent-Length: 3\r\n", "differ"),
                              (b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", "one or the other")):
            status, error = raw_exchange(gateway.port, head + fields + b"\r\n{}")
            self.assertEqual(status, 400, fields)
            self.assertIn(words, error, fields)
        self.assertEqual(http("GET", gateway.url + "/healthz")[0], 200)

    def test_a_head_pistache_cannot_read_is_refused_at_once_in_json(self):
        # Pistache 0.0.5 answered these in plain text, or waited for the rest of
        # a field line without a ':' until the client timeout (an empty 408).
        gateway = Gateway("--client-timeout-ms", "10000")
        self.addCleanup(gateway.stop)
        for head, expected, words in ((b"garbage\r\n", 400, "is not METHOD TARGET HTTP/1.1"),
                                      (b"GET /healthz\r\n", 400, "is not METHOD TARGET HTTP/1.1"),
                                      (b"FOO /healthz HTTP/1.1\r\n", 400, "'FOO'"),
                                      (b"GET /healthz HTTP/2.0\r\n", 400, "HTTP/1.1 and 1.0"),
                                      (b"GET /healthz HTTP/1.1\r\nBadHeader\r\n", 400, "'BadHeader' has no ':'"),
                                      (b"GET /healthz HTTP/1.1\r\nHost: x\r\n folded\r\n", 400, "folding"),
                                      # Pistache read the name as "Content-Length " and the body as the next request
                                      (b"POST /model/ HTTP/1.1\r\nContent-Length : 2\r\n\r\n{}", 400, "not a token")):
            started = time.time()
            status, error = raw_exchange(gateway.port, head + b"\r\n")
            self.assertEqual(status, expected, head)
            self.assertIn(words, error, head)
            self.assertLess(time.time() - started, 5, head)
        # A refusal closes the connection even when the request asked to keep it.
        for head in (b"GET /healthz HTTP/1.1\r\nConnection: keep-alive\r\nBadHeader\r\n",
                     b"POST /model/ HTTP/1.1\r\nConnection: keep-alive\r\nContent-Length: 99999999999\r\n"):
            started = time.time()
            status, _ = raw_exchange(gateway.port, head + b"\r\n")
            self.assertIn(status, (400, 413), head)
            self.assertLess(time.time() - started, 5, head)
        self.assertEqual(http("GET", gateway.url + "/healthz")[0], 200)

    def test_a_header_pistache_cannot_read_is_a_4xx_in_json_not_a_500(self):
        # Pistache 0.0.5's own parsers threw on these, and it answered the
        # exception's text in plain text: a 500 for most.
        gateway = Gateway()
        self.addCleanup(gateway.stop)
        for field, expected, words in ((b"Host: x:notaport", 400, "Invalid port"),  # was a 500
                                       (b"Date: not a date", 400, "Date"),  # was a 500
                                       (b"Cache-Control: max-age=abc", 400, "delta-seconds"),  # was a 500
                                       (b"Cookie: a", 400, "cookie"),  # was a 500
                                       (b"Content-Type: garbage", 415, "Content-Type"),  # plain text
                                       (b"Transfer-Encoding: bogus", 400, "chunked bodies only")):  # a 501
            status, error = raw_exchange(gateway.port, b"GET /healthz HTTP/1.1\r\n" + field + b"\r\n\r\n")
            self.assertEqual(status, expected, field)
            self.assertIn(words, error, field)
        # Nor a chunked body it cannot read (chunk extensions, a size that is
        # not hexadecimal): a plain-text 400, and the connection held open.
        head = b"POST /model/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        for chunks, words in ((b"2;name=value\r\n{}\r\n0\r\n\r\n", "chunk extensions"),
                              (b"two\r\n{}\r\n0\r\n\r\n", "hexadecimal")):
            status, error = raw_exchange(gateway.port, head + chunks)
            self.assertEqual((status, words in error), (400, True), (chunks, error))
        # What curl sends, the seed README's header included, still passes.
        status, _, _ = http("POST", gateway.url + "/model/", b"{}", {"Content-Type": "application/json; chartset=utf-8"})
        self.assertEqual(status, 422)

    def test_a_client_that_expects_100_continue_gets_it_before_sending_its_body(self):
        # Pistache 0.0.5 never sent it: curl waited 1 s before any body over 1 MB.
        gateway = Gateway()
        self.addCleanup(gateway.stop)
        body = b'{"img_data": [[[1,2,3]]], "target_class": "unicorn"}'
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
            s.sendall(b"POST /model/ HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
            self.assertEqual(s.recv(4096), b"HTTP/1.1 100 Continue\r\n\r\n")
            s.sendall(body)
            answer = s.recv(4096)
        self.assertTrue(answer.startswith(b"HTTP/1.1 422"), answer[:100])
        self.assertIn(b"unicorn", answer)

    def test_a_client_sending_its_body_byte_by_byte_is_cut_off_and_blocks_no_one(self):
        # Pistache checks its timeouts every 0.5 s.
        gateway = Gateway("--client-timeout-ms", "1000", "--threads", "1")
        self.addCleanup(gateway.stop)
        started = time.time()
        with socket.create_connection(("127.0.0.1", gateway.port)) as slow:
            slow.sendall(b"POST /model/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{")
            # Meanwhile the one HTTP thread serves everyone else at once.
            answer = trickle(slow, lambda: self.assertEqual(
                http("GET", gateway.url + "/healthz", timeout=2)[0], 200))
        elapsed = time.time() - started
        self.assertLess(elapsed, 10, "the trickling client was never cut off")
        self.assertGreater(elapsed, 0.9)
        if answer:
            self.assertTrue(answer.startswith(b"HTTP/1.1 408"), answer[:100])

    def test_a_kept_alive_connection_trickling_its_next_request_is_cut_off(self):
        gateway = Gateway("--client-timeout-ms", "1000")
        self.addCleanup(gateway.stop)
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as kept:
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            first = kept.recv(4096)
            self.assertTrue(first.startswith(b"HTTP/1.1 200"), first[:100])
            time.sleep(1.5)  # idle longer than the client timeout: the keep-alive timeout's business
            started = time.time()
            kept.sendall(b"POST /model/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            answer = trickle(kept)
        elapsed = time.time() - started
        self.assertTrue(answer.startswith(b"HTTP/1.1 408"), answer[:100])
        # Counted from the request's first byte, not from the last answer.
        self.assertGreater(elapsed, 0.9)
        self.assertLess(elapsed, 5)

    def test_an_answer_that_says_close_is_followed_by_the_close(self):
        # Pistache 0.0.5 answered "Connection: Close" to a request that did not
        # ask to be kept alive, then held the connection until the keep-alive
        # timeout (here 2 s + 5 s).
        gateway = Gateway("--request-timeout-ms", "2000")
        self.addCleanup(gateway.stop)
        # Nor did it read a Connection field past its first token: "TE, close"
        # (and "Upgrade") got "Connection: Ext" and the connection held open.
        for version, fields in ((b"HTTP/1.1", b""), (b"HTTP/1.0", b""), (b"HTTP/1.1", b"Connection: close\r\n"),
                                (b"HTTP/1.1", b"Connection: TE, close\r\nTE: trailers\r\n"),
                                (b"HTTP/1.1", b"Connection: Upgrade\r\n"),
                                (b"HTTP/1.1", b"Connection: keep-alive\r\nConnection: close\r\n")):
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
                started = time.time()
                s.sendall(b"GET /healthz " + version + b"\r\nHost: x\r\n" + fields + b"\r\n")
                answer = b""
                while chunk := s.recv(4096):  # until the gateway closes: a timeout fails the test
                    answer += chunk
                self.assertLess(time.time() - started, 3, (version, fields))
            self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:100])
            self.assertIn(b"Connection: Close", answer)
            self.assertTrue(answer.endswith(b'{"status":"ok"}'), answer[-100:])
        # Kept alive when asked, wherever the token stands: a second request on
        # the same connection is answered.
        for asked in (b"keep-alive", b"Upgrade, Keep-Alive", b"keep-alive, Upgrade"):
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as kept:
                for _ in range(2):
                    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: " + asked + b"\r\n\r\n")
                    answer = kept.recv(4096)
                    self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:100])
                    self.assertIn(b"Connection: Keep-Alive", answer, asked)

    def test_a_chunked_bodys_end_sent_after_its_answer_is_not_the_next_request(self):
        # Pistache 0.0.5 dispatches a chunked request at "0\r\n"; the blank
        # line that ends the body, sent later, was read as the start of the
        # next request, which then got a 400.
        gateway = Gateway()
        self.addCleanup(gateway.stop)
        body = b'{"img_data": [[[1,2,3]]], "target_class": "unicorn"}'
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
            get = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
            for trailer, apart in ((b"", True), (b"X-Checksum: 1\r\n", True), (b"", False)):
                s.sendall(b"POST /model/ HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n")
                answer = s.recv(65536)
                self.assertTrue(answer.startswith(b"HTTP/1.1 422"), answer[:100])
                if apart:
                    s.sendall(trailer + b"\r\n")
                    time.sleep(0.2)
                    s.sendall(get)
                else:
                    s.sendall(trailer + b"\r\n" + get)
                answer = s.recv(65536)
                self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:200])

    def test_a_pipelined_request_is_answered_and_the_connection_closed_for_the_rest(self):
        # Pistache 0.0.5 dropped what followed a request in the same read: the
        # client waited for the second answer until the keep-alive timeout.
        gateway = Gateway("--request-timeout-ms", "2000")
        self.addCleanup(gateway.stop)
        get = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
        body = b'{"img_data": [[[1,2,3]]], "target_class": "unicorn"}'
        post = (b"POST /model/ HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)
        chunked = (b"POST /model/ HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"%x\r\n" % 20 + body[:20] + b"\r\n" + b"%X\r\n" % (len(body) - 20) + body[20:]
                   + b"\r\n0\r\n\r\n")
        for first, status in ((get, b"200"), (post, b"422"), (chunked, b"422")):
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
                started = time.time()
                s.sendall(first + get)
                answer = b""
                while chunk := s.recv(4096):  # until the gateway closes: a timeout fails the test
                    answer += chunk
                self.assertLess(time.time() - started, 3)
            self.assertTrue(answer.startswith(b"HTTP/1.1 " + status), answer[:100])
            self.assertIn(b"Connection: Close", answer)
            self.assertEqual(answer.count(b"HTTP/1.1 "), 1, answer)  # the second is the client's to send again
        # Not pipelined, each is answered and the connection kept.
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
            for first, status in ((post, b"422"), (chunked, b"422"), (get, b"200")):
                s.sendall(first)
                answer = s.recv(65536)
                self.assertTrue(answer.startswith(b"HTTP/1.1 " + status), answer[:100])
                self.assertIn(b"Connection: Keep-Alive", answer)
        self.assertEqual(http("GET", gateway.url + "/healthz")[0], 200)

    def test_an_answer_slower_than_the_client_timeout_still_arrives(self):
        # Pistache 0.0.5 applied its header timeout to connections whose
        # answer was pending (pistache issue #1030): this was a 408.
        gateway, _ = self.serve("bit-m-r50x1", "--client-timeout-ms", "300")
        ref = self.refs["bit-m-r50x1"]
        body = json.dumps({"img_data": ref["image_uint8_hwc"], "target_class": "cat", "n_steps": 400}).encode()
        status, headers, _ = http("POST", gateway.url + "/model/", body)
        self.assertEqual(status, 200)
        self.assertGreater(float(headers["X-Compute-Seconds"]), 1.0)  # well past the client timeout

    def test_no_worker_is_503_and_readyz_says_so(self):
        gateway = Gateway("--request-timeout-ms", "500")
        self.addCleanup(gateway.stop)
        self.assertEqual(http("GET", gateway.url + "/readyz")[0], 503)
        status, headers, body = http("POST", gateway.url + "/model/",
                                     b'{"img_data": [[[1,2,3]]], "target_class": "cat"}')
        self.assertEqual(status, 503)
        self.assertIn("Retry-After", headers)

    def test_worker_killed_mid_request_is_retried(self):
        gateway, first = self.serve("bit-m-r50x1")
        second = start_worker(gateway.endpoint, "bit", self.checkpoints["bit-m-r50x1"])
        self.addCleanup(stop, second)
        wait_until(lambda: len(gateway.workers()) == 2, what="two workers")
        ref = self.refs["bit-m-r50x1"]
        body = json.dumps({"img_data": ref["image_uint8_hwc"], "target_class": "cat", "n_steps": 200}).encode()
        thread, answers = post_while_busy(gateway, body)
        busy = [w for w in gateway.workers() if w["state"] == "busy"]
        self.assertEqual(len(busy), 1)
        # Kill whichever worker took it: both are candidates, so kill both in turn if needed.
        for process in (first, second):
            process.send_signal(signal.SIGKILL)
            process.wait()
            if len(gateway.workers()) < 2 or not thread.is_alive():
                break
        replacement = start_worker(gateway.endpoint, "bit", self.checkpoints["bit-m-r50x1"])
        self.addCleanup(stop, replacement)
        thread.join(timeout=300)
        self.assertEqual(answers["r"][0], 200)


    def test_a_batching_worker_answers_each_request_as_alone(self):
        # Three requests (their own images, classes and n_steps) reach one
        # worker that batches: it computes them together, and each answer
        # equals the same request's answer computed alone, up to float32
        # rounding: a batch of another size rounds differently, which moves
        # BiT's IG here by up to 1% of its largest value (measured; with the
        # same batches in float64 they agree to 1e-9: engine_test.cc).
        ref = self.refs["bit-m-r50x1"]
        gateway = Gateway()
        self.addCleanup(gateway.stop)
        log = open(os.path.join(self.dir, "batching-worker.log"), "w+")
        self.addCleanup(log.close)
        worker = subprocess.Popen(
            [os.path.join(BIN, "intgrads-worker"), "--connect", gateway.endpoint, "-bp",
             self.checkpoints["bit-m-r50x1"], "--cpu", "--threads", "1", "--heartbeat-ms", "200",
             "--batch-requests", "3", "--batch-window-ms", "2000", *worker_key_flags()], stderr=log)
        self.addCleanup(stop, worker)
        gateway.wait_ready()
        self.assertEqual(gateway.workers()[0]["slots"], 3)
        image = ref["image_uint8_hwc"]
        bodies = [json.dumps({"img_data": img, "target_class": cls, "n_steps": n}).encode()
                  for img, cls, n in ((image, "cat", 8), (image[::-1], "dog", 12), ([r[::-1] for r in image], 3, 5))]
        answers = [None] * len(bodies)

        def post(i):
            answers[i] = http("POST", gateway.url + "/model/", bodies[i])
        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        log.seek(0)
        self.assertIn("batched with 2 more", log.read())

        def tensors(payload):
            with tempfile.NamedTemporaryFile(suffix=".gzip") as f:
                f.write(payload)
                f.flush()
                return rm.load_gzip_dict(f.name)
        for i, body in enumerate(bodies):
            self.assertEqual(answers[i][0], 200, answers[i][2][:200])
            together = tensors(answers[i][2])
            status, _, payload = http("POST", gateway.url + "/model/", body)  # alone: waits out the window
            self.assertEqual(status, 200)
            alone = tensors(payload)
            self.assertEqual(list(together.keys()), list(alone.keys()))
            self.assertEqual(together["target_class"], alone["target_class"])
            for key in ("integrated_grads", "integrated_directional_grads"):
                scale = alone[key].abs().max().item()
                self.assertLess((together[key] - alone[key]).abs().max().item(), 3e-2 * scale, key)
            torch.testing.assert_close(together["output"], alone["output"])
            for key in ("step_sizes", "intermediates"):
                torch.testing.assert_close(together[key], alone[key], rtol=0, atol=0)

    def test_several_models_behind_one_gateway(self):
        gateway = Gateway()
        self.addCleanup(gateway.stop)
        for name, model in (("lanet-c16-l8", "lanet"), ("bit-m-r50x1", "bit")):
            worker = start_worker(gateway.endpoint, self.refs[name]["family"], self.checkpoints[name], "--name", model)
            self.addCleanup(stop, worker)
        wait_until(lambda: len(gateway.workers()) == 2, what="two workers")
        models = json.loads(http("GET", gateway.url + "/v1/models")[2])["models"]
        self.assertEqual(sorted((m["name"], m["family"]) for m in models), [("bit", "bit"), ("lanet", "lanet")])
        body = json.dumps({"img_data": self.refs["bit-m-r50x1"]["image_uint8_hwc"], "target_class": "cat"}).encode()
        for model, name in (("bit", "bit-m-r50x1"), ("lanet", "lanet-c16-l8")):
            status, _, payload = http("POST", f"{gateway.url}/models/{model}/model", body)
            self.assertEqual(status, 200, payload[:200])
            with tempfile.NamedTemporaryFile(suffix=".gzip") as f:
                f.write(payload)
                f.flush()
                d = rm.load_gzip_dict(f.name)
            expected = self.refs[name]["expected_logits_eval"]
            torch.testing.assert_close(d["output"][0], torch.tensor(expected), rtol=1e-4, atol=1e-5)
        status, _, answer = http("POST", gateway.url + "/model/", body)
        self.assertEqual(status, 422)
        self.assertIn("/models/NAME/model", json.loads(answer)["error"])
        status, _, answer = http("POST", gateway.url + "/models/nope/model", body)
        self.assertEqual(status, 404)
        self.assertIn("served: bit, lanet", json.loads(answer)["error"])


    def test_token_guards_routes_and_the_worker_pool_is_the_keys(self):
        """The HTTP token guards the routes; the worker pool is guarded by the
        CURVE keys, apart from it (a worker never sees the token)."""
        gateway = Gateway("--token", "s3cret")
        self.addCleanup(gateway.stop)
        auth = {"Authorization": "Bearer s3cret"}
        # Strangers cannot join the pool: without keys, or with keys of their own.
        other = tempfile.mkdtemp(dir=self.dir)
        subprocess.run([os.path.join(BIN, "intgrads-keygen"), os.path.join(other, "stranger")], check=True,
                       capture_output=True)
        for extra in (("--insecure-gateway",),
                      ("--secret-key", os.path.join(other, "stranger.key"), "--gateway-key",
                       os.path.join(keys(), "gateway.pub"))):
            forged = subprocess.Popen([os.path.join(BIN, "intgrads-worker"), "--connect", gateway.endpoint, "-lp",
                                       self.checkpoints["lanet-c16-l8"], "--cpu", "--threads", "1", *extra])
            self.addCleanup(stop, forged)
        member = start_worker(gateway.endpoint, "lanet", self.checkpoints["lanet-c16-l8"])
        self.addCleanup(stop, member)
        wait_until(lambda: http("GET", gateway.url + "/readyz", headers=auth, timeout=2)[0] == 200, what="member")
        time.sleep(1.0)  # the forged workers have had time to announce themselves
        workers = json.loads(http("GET", gateway.url + "/v1/workers", headers=auth)[2])["workers"]
        self.assertEqual(len(workers), 1)
        body = json.dumps({"img_data": [[[1, 2, 3]]], "target_class": "cat", "n_steps": 2}).encode()
        for headers in ({}, {"Authorization": "Bearer guess"}, {"Authorization": "s3cret"},
                        {"Authorization": "Basic s3cret"}, {"Authorization": "Bearer s3cret2"}):
            status, answer_headers, answer = http("POST", gateway.url + "/model/", body, headers)
            self.assertEqual(status, 401, headers)
            self.assertEqual(answer_headers.get("WWW-Authenticate"), "Bearer")
            self.assertIn("Bearer", json.loads(answer)["error"])
        # Data and attributions need the token; the pages and health do not
        # (the web page shows its token field, a health check needs no secret).
        for path in ("/v1/workers", "/v1/model", "/v1/models", "/metrics"):
            self.assertEqual(http("GET", gateway.url + path)[0], 401, path)
        for path in ("/", "/docs", "/openapi.json", "/healthz", "/readyz"):
            self.assertEqual(http("GET", gateway.url + path)[0], 200, path)
        self.assertEqual(http("HEAD", gateway.url + "/readyz")[0], 200)
        document = json.loads(http("GET", gateway.url + "/openapi.json")[2])
        scheme = document["components"]["securitySchemes"]["bearerAuth"]
        self.assertEqual((scheme["type"], scheme["scheme"]), ("http", "bearer"))
        self.assertEqual(document["paths"]["/readyz"]["get"]["security"], [])
        # The scheme in any case, as RFC 9110 (11.1) has it.
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            self.assertEqual(http("POST", gateway.url + "/model/", body, {"Authorization": scheme + " s3cret"})[0],
                             200, scheme)
        self.assertEqual(http("POST", gateway.url + "/model/", body, {"Authorization": "Bearer   s3cret"})[0], 200)

    def test_a_worker_refuses_a_network_endpoint_without_keys(self):
        for argv, tail in (([os.path.join(BIN, "intgrads-worker"), "--connect", "tcp://127.0.0.1:9"],
                            "--insecure-gateway to send the requests' images and answers in clear"),
                           ([os.path.join(BIN, "intgrads-gateway"), "--port", "0", "--bind-workers",
                             f"tcp://127.0.0.1:{free_port()}"], "--insecure-workers to let whoever reaches it join")):
            run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            self.assertEqual(run.returncode, 2, run.stderr)
            self.assertIn(tail, run.stderr)
            self.assertEqual(len(run.stderr.strip().splitlines()), 1, run.stderr)

    def test_sigterm_lets_requests_in_flight_finish(self):
        gateway, _ = self.serve("bit-m-r50x1")
        ref = self.refs["bit-m-r50x1"]
        body = json.dumps({"img_data": ref["image_uint8_hwc"], "target_class": "cat", "n_steps": 200}).encode()
        thread, answers = post_while_busy(gateway, body)
        gateway.process.send_signal(signal.SIGTERM)
        thread.join(timeout=120)
        self.assertEqual(answers["r"][0], 200)
        self.assertEqual(gateway.process.wait(timeout=30), 0)

    def test_requests_of_clients_that_left_are_dropped(self):
        gateway, _ = self.serve("bit-m-r50x1")
        ref = self.refs["bit-m-r50x1"]
        # The most steps a request may ask for: the slow one must outlast the three clients' 0.9 s (300 steps
        # took 0.6 s on a 2-core host, and the last client was served).
        slow = json.dumps({"img_data": ref["image_uint8_hwc"], "target_class": "cat", "n_steps": 1024}).encode()
        quick = json.dumps({"img_data": ref["image_uint8_hwc"], "target_class": "cat", "n_steps": 2}).encode()
        thread, answers = post_while_busy(gateway, slow)
        for _ in range(3):  # clients that give up while their request waits in the queue
            with self.assertRaises(OSError):
                http("POST", gateway.url + "/model/", quick, timeout=0.3)
        thread.join(timeout=120)
        self.assertEqual(answers["r"][0], 200)
        self.assertEqual(http("POST", gateway.url + "/model/", quick)[0], 200)
        self.assertEqual(gateway.workers()[0]["requests_served"], 2)  # the slow one and the last one


class Launcher(unittest.TestCase):
    def test_one_command_serves_and_stops_cleanly(self):
        ref = rm.reference("lanet-c16-l8")
        if ref is None:
            self.skipTest("reference missing")
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = os.path.join(tmp, "lanet.pth")
            rm.write_checkpoint(ref, checkpoint)
            port = free_port()
            # The README's second form: the other program name, -h host, -p port, -lb.
            process = subprocess.Popen([os.path.join(BIN, "intgrads"), "-lb", checkpoint, "-h", "127.0.0.1", "-p",
                                        str(port), "--cpu"])
            try:
                url = f"http://127.0.0.1:{port}"
                wait_until(lambda: http("GET", url + "/readyz", timeout=2)[0] == 200, what="launcher ready")
                body = json.dumps({"img_data": ref["image_uint8_hwc"], "target_class": "cat", "n_steps": 5}).encode()
                self.assertEqual(http("POST", url + "/model/", body)[0], 200)
            finally:
                self.assertEqual(stop(process, signal.SIGINT), 0)
            with self.assertRaises(OSError):  # everything it started is gone
                http("GET", f"http://127.0.0.1:{port}/healthz", timeout=2)

    def run_launcher(self, *args):
        return subprocess.run([os.path.join(BIN, "intgrads-images"), *args], capture_output=True, text=True,
                              timeout=60)

    def test_clear_start_errors(self):
        result = self.run_launcher("-bp", "/nonexistent.pth")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("/nonexistent.pth", result.stderr)
        result = self.run_launcher("-bp", "a.pth", "-lb", "b.pth")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("two model flags", result.stderr)
        if not torch.cuda.is_available():
            started = time.time()
            result = self.run_launcher("-lb", "/etc/hostname", "--cuda")
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("CUDA is not available", result.stderr)
            self.assertLess(time.time() - started, 10)

    def test_bad_checkpoint_stops_the_launcher(self):
        with tempfile.NamedTemporaryFile(suffix=".pth") as f:
            f.write(b"this is not a checkpoint")
            f.flush()
            result = self.run_launcher("-bp", f.name, "-p", str(free_port()))
            self.assertEqual(result.returncode, 2)
            self.assertIn("not a torch.save file", result.stderr)


if __name__ == "__main__":
    unittest.main()
