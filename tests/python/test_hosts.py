"""Across hosts, on one machine: gateways, workers and a client each in a
network namespace of their own, with their own addresses. One worker is
killed with SIGKILL mid-request and the other's link is cut; every request
must still be answered correctly, and the pool must recover when the link
comes back. Two gateways share three workers, and one gateway is killed
while a client sends 32 requests: every one is answered. Needs root and `ip`
(iproute2); skipped where namespaces cannot be made."""

import gzip
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import reference_models as rm
from service import BIN, SLOWDOWN, gateway_key_flags, stop, wait_until, worker_key_flags

TAG = str(os.getpid() % 100000)
GW, W1, W2 = f"igw{TAG}", f"iw1{TAG}", f"iw2{TAG}"
# Addresses inside this test's own namespaces only.
NETS = {W1: ("10.231.1.1", "10.231.1.2", f"g1x{TAG}", f"w1x{TAG}"),
        W2: ("10.231.2.1", "10.231.2.2", f"g2x{TAG}", f"w2x{TAG}")}
PORT = 18888


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def netns_exec(ns, *command):
    return ["ip", "netns", "exec", ns, *command]


def can_make_namespaces():
    if os.geteuid() != 0 or subprocess.run(["which", "ip"], capture_output=True).returncode != 0:
        return False
    probe = f"igprobe{TAG}"
    ok = ip("netns", "add", probe, check=False).returncode == 0
    ip("netns", "del", probe, check=False)
    return ok


def curl_in(ns, path, body_file, output):
    """(HTTP status, stderr) of a POST made from inside namespace `ns`."""
    result = subprocess.run(netns_exec(ns, "curl", "-s", "-o", output, "-w", "%{http_code}",
                                       "--max-time", str(120 * SLOWDOWN),
                                       f"http://127.0.0.1:{PORT}{path}", "--data", f"@{body_file}"),
                            capture_output=True, text=True)
    return int(result.stdout or 0), result.stderr


def get_in(ns, path):
    result = subprocess.run(netns_exec(ns, "curl", "-s", "--max-time", "5", f"http://127.0.0.1:{PORT}{path}"),
                            capture_output=True, text=True)
    return result.stdout


@unittest.skipUnless(can_make_namespaces(), "needs root and ip netns (network namespaces cannot be made here)")
class AcrossHosts(unittest.TestCase):
    def setUp(self):
        self.ref = rm.reference("lanet-c16-l8")
        if self.ref is None:
            self.skipTest("reference missing")
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        for ns in (GW, W1, W2):
            ip("netns", "add", ns)
            self.addCleanup(ip, "netns", "del", ns, check=False)
            ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        for ns, (gw_addr, w_addr, gw_if, w_if) in NETS.items():
            ip("link", "add", gw_if, "netns", GW, "type", "veth", "peer", "name", w_if, "netns", ns)
            ip("netns", "exec", GW, "ip", "addr", "add", gw_addr + "/24", "dev", gw_if)
            ip("netns", "exec", ns, "ip", "addr", "add", w_addr + "/24", "dev", w_if)
            ip("netns", "exec", GW, "ip", "link", "set", gw_if, "up")
            ip("netns", "exec", ns, "ip", "link", "set", w_if, "up")
        self.checkpoint = os.path.join(self.tmp.name, "lanet.pth")
        rm.write_checkpoint(self.ref, self.checkpoint)
        self.processes = []

    def start(self, ns, *command):
        process = subprocess.Popen(netns_exec(ns, *command))
        self.processes.append(process)
        self.addCleanup(stop, process, signal.SIGKILL)
        return process

    def start_worker(self, ns):
        gw_addr = NETS[ns][0]
        return self.start(ns, os.path.join(BIN, "intgrads-worker"), "--connect", f"tcp://{gw_addr}:5555", "-lp",
                          self.checkpoint, "--threads", "1", "--heartbeat-ms", "200", *worker_key_flags())

    def workers(self):
        text = get_in(GW, "/v1/workers")
        return json.loads(text)["workers"] if text else []

    def test_killed_worker_and_cut_link_lose_no_request(self):
        self.start(GW, os.path.join(BIN, "intgrads-gateway"), "--host", "127.0.0.1", "--port", str(PORT),
                   "--bind-workers", "tcp://*:5555", "--heartbeat-ms", "200",
                   "--request-timeout-ms", str(90000 * SLOWDOWN), *gateway_key_flags())
        wait_until(lambda: get_in(GW, "/healthz"), what="gateway")
        first = self.start_worker(W1)
        self.start_worker(W2)
        wait_until(lambda: len(self.workers()) == 2, what="two workers across the namespaces")
        self.assertEqual(sorted(w["device"] for w in self.workers()), ["cpu", "cpu"])

        body = os.path.join(self.tmp.name, "body.json")
        with open(body, "w") as f:
            json.dump({"img_data": self.ref["image_uint8_hwc"], "target_class": "cat", "n_steps": 120}, f)
        expected = os.path.join(self.tmp.name, "offline.gzip")
        subprocess.run([os.path.join(BIN, "intgrads-images"), "attribute", "-lp", self.checkpoint, "--input", body,
                        "--output", expected, "--threads", "1"], check=True, capture_output=True)
        with gzip.open(expected) as f:
            expected_bytes = f.read()

        results = {}

        def request(i):
            out = os.path.join(self.tmp.name, f"answer{i}.gzip")
            results[i] = (curl_in(GW, "/model/", body, out), out)

        threads = [threading.Thread(target=request, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        wait_until(lambda: sum(w["state"] == "busy" for w in self.workers()) == 2, what="both workers busy")
        first.send_signal(signal.SIGKILL)  # mid-request
        _, _, gw_if2, _ = NETS[W2]
        ip("netns", "exec", GW, "ip", "link", "set", gw_if2, "down")  # W2 is cut off
        wait_until(lambda: len(self.workers()) == 0, timeout=10, what="both workers dropped")
        time.sleep(1.0)
        ip("netns", "exec", GW, "ip", "link", "set", gw_if2, "up")  # the link comes back
        wait_until(lambda: len(self.workers()) == 1, timeout=30, what="W2 back in the pool")
        self.start_worker(W1)  # a replacement for the killed one
        wait_until(lambda: len(self.workers()) == 2, timeout=30, what="the pool recovered")
        for t in threads:
            t.join(timeout=300 * SLOWDOWN)
        for i in range(6):
            (status, stderr), out = results[i]
            self.assertEqual(status, 200, f"request {i}: {stderr}")
            with gzip.open(out) as f:
                self.assertEqual(f.read(), expected_bytes, f"request {i}")


# Two gateways, three workers and a client on one switch: a bridge in a namespace of its own.
SWITCH = f"isw{TAG}"
HOSTS = {f"ig1{TAG}": "10.232.0.11", f"ig2{TAG}": "10.232.0.12", f"ik1{TAG}": "10.232.0.21",
         f"ik2{TAG}": "10.232.0.22", f"ik3{TAG}": "10.232.0.23", f"icl{TAG}": "10.232.0.30"}
CLIENT = """
import json, sys, threading
import numpy as np
sys.path.insert(0, sys.argv[1])
from intgrads_client import Client
urls, count = sys.argv[2], int(sys.argv[3])
image = np.array(json.load(open(sys.argv[4])), dtype=np.uint8)
done, failed, lock = [], [], threading.Lock()
def one(i):
    client = Client(urls if i % 2 == 0 else ",".join(reversed(urls.split(","))), timeout=300)
    try:
        e = client.explain(image, target="cat", n_steps=40)
        with lock:
            done.append((i, float(e.integrated_grads.sum()), client.url))
            print("answered", i, flush=True)
    except Exception as e:
        with lock:
            failed.append((i, repr(e)))
threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
for t in threads:
    t.start()
for t in threads:
    t.join()
json.dump({"done": done, "failed": failed}, open(sys.argv[5], "w"))
"""


@unittest.skipUnless(can_make_namespaces(), "needs root and ip netns (network namespaces cannot be made here)")
class TwoGateways(unittest.TestCase):
    def setUp(self):
        self.ref = rm.reference("lanet-c16-l8")
        if self.ref is None:
            self.skipTest("reference missing")
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        ip("netns", "add", SWITCH)
        self.addCleanup(ip, "netns", "del", SWITCH, check=False)
        ip("netns", "exec", SWITCH, "ip", "link", "add", "br0", "type", "bridge")
        ip("netns", "exec", SWITCH, "ip", "link", "set", "br0", "up")
        for n, (ns, address) in enumerate(HOSTS.items()):
            ip("netns", "add", ns)
            self.addCleanup(ip, "netns", "del", ns, check=False)
            ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
            ip("link", "add", f"h{n}x{TAG}", "netns", ns, "type", "veth", "peer", "name", f"s{n}x{TAG}", "netns",
               SWITCH)
            ip("netns", "exec", ns, "ip", "addr", "add", address + "/24", "dev", f"h{n}x{TAG}")
            ip("netns", "exec", ns, "ip", "link", "set", f"h{n}x{TAG}", "up")
            ip("netns", "exec", SWITCH, "ip", "link", "set", f"s{n}x{TAG}", "master", "br0")
            ip("netns", "exec", SWITCH, "ip", "link", "set", f"s{n}x{TAG}", "up")
        self.checkpoint = os.path.join(self.tmp.name, "lanet.pth")
        rm.write_checkpoint(self.ref, self.checkpoint)

    def start(self, ns, *command):
        process = subprocess.Popen(netns_exec(ns, *command))
        self.addCleanup(stop, process, signal.SIGKILL)
        return process

    def test_a_dead_gateway_costs_the_client_nothing(self):
        gateways = [ns for ns in HOSTS if ns.startswith("ig")]
        workers = [ns for ns in HOSTS if ns.startswith("ik")]
        client = next(ns for ns in HOSTS if ns.startswith("icl"))
        started = {}
        for ns in gateways:
            started[ns] = self.start(ns, os.path.join(BIN, "intgrads-gateway"), "--host", HOSTS[ns], "--port",
                                     str(PORT), "--bind-workers", f"tcp://{HOSTS[ns]}:5555", "--heartbeat-ms", "200",
                                     "--request-timeout-ms", str(120000 * SLOWDOWN), *gateway_key_flags())
        endpoints = ",".join(f"tcp://{HOSTS[ns]}:5555" for ns in gateways)
        for ns in workers:
            self.start(ns, os.path.join(BIN, "intgrads-worker"), "--connect", endpoints, "-lp", self.checkpoint,
                       "--threads", "1", "--heartbeat-ms", "200", *worker_key_flags())

        def pool(ns):
            result = subprocess.run(netns_exec(client, "curl", "-s", "--max-time", "5",
                                               f"http://{HOSTS[ns]}:{PORT}/v1/workers"), capture_output=True, text=True)
            return len(json.loads(result.stdout)["workers"]) if result.stdout else 0

        for ns in gateways:
            wait_until(lambda ns=ns: pool(ns) == 3, timeout=60 * SLOWDOWN, what=f"three workers at {ns}")
        image = os.path.join(self.tmp.name, "image.json")
        with open(image, "w") as f:
            json.dump(self.ref["image_uint8_hwc"], f)
        script = os.path.join(self.tmp.name, "client.py")
        with open(script, "w") as f:
            f.write(CLIENT)
        results = os.path.join(self.tmp.name, "results.json")
        urls = ",".join(f"http://{HOSTS[ns]}:{PORT}" for ns in gateways)
        clients = subprocess.Popen(netns_exec(client, "/usr/bin/python3", script,
                                              os.path.join(rm.REPO, "clients", "python"), urls, "32", image, results),
                                   stdout=subprocess.PIPE, text=True)
        # Once a few are answered, the first gateway dies with requests in hand.
        for _ in range(4):
            clients.stdout.readline()
        started[gateways[0]].send_signal(signal.SIGKILL)
        clients.communicate(timeout=600 * SLOWDOWN)
        with open(results) as f:
            outcome = json.load(f)
        self.assertEqual(outcome["failed"], [])
        self.assertEqual(sorted(i for i, _, _ in outcome["done"]), list(range(32)))
        sums = {round(total, 5) for _, total, _ in outcome["done"]}
        self.assertEqual(len(sums), 1, sums)  # the same attribution, whichever gateway answered
        self.assertEqual(pool(gateways[1]), 3)
        # Requests that began at the dead gateway were answered by the other.
        first = f"http://{HOSTS[gateways[0]]}:{PORT}"
        moved = [i for i, _, url in outcome["done"] if i % 2 == 0 and url != first]
        self.assertGreater(len(moved), 0)


if __name__ == "__main__":
    unittest.main()
