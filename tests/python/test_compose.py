"""The docker-compose deployment, run for real (label `docker`; it takes
about 20 minutes from nothing, so it is not in the default run): installs
Docker, docker-compose and debootstrap from Debian if missing, starts dockerd
if none runs, makes the debian:bookworm base image with debootstrap if
missing, builds the images, checks their sizes, brings the pool up on the
embedded default model, sends the original README's curl flow, kills a
worker container with requests in flight (none lost), restarts the gateway
container (the workers rejoin), serves a checkpoint chosen by environment
variable, and brings it all down. Then the same compose file as a Swarm
stack, on a one-node swarm of a second dockerd inside a network namespace of
its own (a swarm publishes on every interface of its host)."""

import atexit
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest

import torch

import reference_models as rm
from service import BIN, free_port, http, wait_until

# The checkout is copied (the files git tracks, and those it would) and built
# from the copy: edits made while the images build do not reach them halfway.
SNAPSHOT = tempfile.mkdtemp(prefix="intgrads-compose-")
atexit.register(shutil.rmtree, SNAPSHOT, True)
DEPLOY = os.path.join(SNAPSHOT, "deploy")
COMPOSE = os.path.join(DEPLOY, "docker-compose.yml")


def snapshot_checkout():
    if os.path.exists(COMPOSE):
        return
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=rm.REPO, check=True,
                           capture_output=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source, target = os.path.join(rm.REPO, name), os.path.join(SNAPSHOT, name)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target)
PROJECT = f"intgradstest{os.getpid() % 100000}"
GATEWAY_MAX_MB, WORKER_MAX_MB = 150, 1200


def run(*command, check=True, env=None, timeout=3600, **kwargs):
    return subprocess.run(command, check=check, capture_output=True, text=True, env=env, timeout=timeout, **kwargs)


def apt_install(*packages):
    missing = [p for p in packages if run("dpkg-query", "-W", "-f=${Status}", p, check=False).stdout
               != "install ok installed"]
    if missing:
        run("apt-get", "update", "-qq")
        run("apt-get", "install", "-y", "--no-install-recommends", *missing,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def docker_ready(host=None):
    return run("docker", *(["-H", host] if host else []), "info", check=False, timeout=30).returncode == 0


def start_dockerd(*flags, host=None, netns=None):
    """A dockerd in the background (in `netns` if given), once it answers."""
    command = ["dockerd", *flags]
    if netns:
        # Only the network namespace: `ip netns exec` would also mount a /sys of
        # its own, without the cgroup hierarchies dockerd needs.
        command = ["nsenter", f"--net=/var/run/netns/{netns}", *command]
    log = open(os.path.join(tempfile.gettempdir(), f"dockerd-{netns or 'main'}.log"), "a")
    process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_until(lambda: docker_ready(host) or process.poll() is not None, timeout=120, what="dockerd")
        if process.poll() is not None:
            with open(log.name) as f:
                raise AssertionError("dockerd stopped: " + f.read()[-2000:])
    except AssertionError:
        process.terminate()
        process.wait(60)
        raise
    return process


def apt_mirror():
    """The Debian mirror apt uses here."""
    for name in sorted(os.listdir("/etc/apt/sources.list.d")) + ["../sources.list"]:
        path = os.path.join("/etc/apt/sources.list.d", name)
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            for line in f:
                words = line.split()
                if words and words[0] == "URIs:":
                    return words[1]
                if len(words) >= 3 and words[0] == "deb":
                    return words[1] if not words[1].startswith("[") else words[2]
    return "http://deb.debian.org/debian"


def make_base_image():
    if run("docker", "image", "inspect", "debian:bookworm", check=False).returncode == 0:
        return
    root = tempfile.mkdtemp(prefix="bookworm-")
    try:
        run("debootstrap", "--variant=minbase", "bookworm", root, apt_mirror())
        with subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE) as tar:
            subprocess.run(["docker", "import", "-", "debian:bookworm"], stdin=tar.stdout, check=True,
                           capture_output=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def image_mb(name):
    return int(run("docker", "image", "inspect", "-f", "{{.Size}}", name).stdout) / 1e6


@unittest.skipUnless(os.geteuid() == 0, "needs root to install and run Docker")
class Compose(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        started = time.time()
        apt_install("docker.io", "docker-compose", "debootstrap", "iproute2")
        cls.dockerd = None if docker_ready() else start_dockerd()
        make_base_image()
        snapshot_checkout()
        cls.ready_s = time.time() - started
        started = time.time()
        run("docker-compose", "-f", COMPOSE, "-p", PROJECT, "build", timeout=3600)
        cls.build_s = time.time() - started
        print(f"\nDocker ready in {cls.ready_s:.0f} s, images built in {cls.build_s:.0f} s")

    def compose(self, *args, env=None, check=True, timeout=600):
        return run("docker-compose", "-f", COMPOSE, "-p", PROJECT, *args, env=env, check=check, timeout=timeout)

    def test_images_hold_only_what_runs(self):
        gateway, worker = image_mb("intgrads-gateway:latest"), image_mb("intgrads-worker:latest")
        print(f"image sizes: gateway {gateway:.1f} MB, worker {worker:.1f} MB")
        self.assertLess(gateway, GATEWAY_MAX_MB)
        self.assertLess(worker, WORKER_MAX_MB)
        # FROM scratch: no shell, no compiler, no Python, no package manager.
        for image in ("intgrads-gateway:latest", "intgrads-worker:latest"):
            container = run("docker", "create", image).stdout.strip()
            self.addCleanup(run, "docker", "rm", container, check=False)
            listing = subprocess.run(["docker", "export", container], capture_output=True, check=True).stdout
            names = tarfile.open(fileobj=io.BytesIO(listing)).getnames()
            for forbidden in ("bin/sh", "usr/bin/python3", "usr/bin/gcc", "usr/bin/cmake", "usr/bin/apt-get"):
                self.assertNotIn(forbidden, names, image)

    def test_the_pool_serves_survives_a_worker_and_a_gateway_restart(self):
        port = free_port()
        env = dict(os.environ, INTGRADS_PUBLISH=f"127.0.0.1:{port}", INTGRADS_MODEL="", INTGRADS_MODEL_DIR="")
        self.addCleanup(self.compose, "down", "-v", "--timeout", "5", env=env, check=False)
        self.compose("up", "-d", "--scale", "worker=2", env=env)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: len(json.loads(http("GET", url + "/v1/workers", timeout=5)[2])["workers"]) == 2,
                   timeout=180, what="two workers")
        # Zero configuration: the embedded default model.
        model = json.loads(http("GET", url + "/v1/model")[2])
        self.assertEqual((model["family"], model["variant"]), ("lanet", "C16-L8"))
        # The original README's flow, word for word but the port.
        work = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, work, True)
        from PIL import Image
        Image.new("RGB", (64, 64), (40, 70, 120)).save(os.path.join(work, "ship.png"))
        run(sys.executable, os.path.join(rm.REPO, "prepare_input.py"), "ship.png", "ship", "input_json_file.json",
            cwd=work)
        curl = run("sh", "-c", f'curl http://localhost:{port}/model/ --data @input_json_file.json --output '
                               f'saved_file.gzip -H "Content-Type:application/json; chartset=utf-8"', cwd=work)
        self.assertEqual(curl.returncode, 0, curl.stderr)
        d = rm.load_gzip_dict(os.path.join(work, "saved_file.gzip"))
        self.assertEqual(tuple(d["integrated_grads"].shape), (1, 3, 32, 32))
        self.assertEqual(d["target_class"], 8)

        # A worker container killed with requests in flight: none lost.
        body = json.dumps({"img_data": [[[(x * 7 + y) % 256, y * 4 % 256, x * 4 % 256] for x in range(32)]
                                        for y in range(32)], "target_class": "cat", "n_steps": 400}).encode()
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(http("POST", url + "/model/", body, timeout=300)))
                   for _ in range(6)]
        for t in threads:
            t.start()
        wait_until(lambda: sum(w["state"] == "busy" for w in json.loads(
            http("GET", url + "/v1/workers", timeout=5)[2])["workers"]) == 2, timeout=60, what="both workers busy")
        containers = self.compose("ps", "-q", "worker", env=env).stdout.split()
        run("docker", "kill", containers[0])
        for t in threads:
            t.join(300)
        self.assertEqual(sorted(a[0] for a in answers), [200] * 6)
        self.assertEqual(len({a[2] for a in answers}), 1)  # the same bytes, whichever worker
        # Started again, the killed worker rejoins (Docker leaves a killed container stopped).
        run("docker", "start", containers[0])
        wait_until(lambda: len(json.loads(http("GET", url + "/v1/workers", timeout=5)[2])["workers"]) == 2,
                   timeout=180, what="the killed worker back")

        # The gateway restarted: the workers announce themselves to the new one.
        self.compose("restart", "gateway", env=env)
        wait_until(lambda: len(json.loads(http("GET", url + "/v1/workers", timeout=5)[2])["workers"]) == 2,
                   timeout=120, what="the workers rejoined")
        self.assertEqual(http("POST", url + "/model/", body)[0], 200)
        health = run("docker", "inspect", "-f", "{{.State.Health.Status}}",
                     self.compose("ps", "-q", "gateway", env=env).stdout.strip()).stdout.strip()
        self.assertIn(health, ("healthy", "starting"))

    def test_a_checkpoint_chosen_by_environment(self):
        ref = rm.reference("lanet-c16-l8")
        if ref is None:
            self.skipTest("reference missing")
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, True)
        os.chmod(folder, 0o755)
        checkpoint = os.path.join(folder, "lanet.pth")
        rm.write_checkpoint(ref, checkpoint)
        os.chmod(checkpoint, 0o644)
        port = free_port()
        env = dict(os.environ, INTGRADS_PUBLISH=f"127.0.0.1:{port}", INTGRADS_MODEL_DIR=folder,
                   INTGRADS_MODEL="lanet:/models/lanet.pth")
        self.addCleanup(self.compose, "down", "-v", "--timeout", "5", env=env, check=False)
        self.compose("up", "-d", "--scale", "worker=1", env=env)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: len(json.loads(http("GET", url + "/v1/workers", timeout=5)[2])["workers"]) == 1,
                   timeout=180, what="the worker")
        request = os.path.join(folder, "request.json")
        rm.write_request(ref, request)
        with open(request, "rb") as f:
            status, _, served = http("POST", url + "/model/", f.read())
        self.assertEqual(status, 200)
        offline = os.path.join(folder, "offline.gzip")
        run(os.path.join(BIN, "intgrads-images"), "attribute", "-lp", checkpoint, "--input", request, "--output",
            offline, "--threads", "1")
        # The same checkpoint's numbers: equal to float rounding (the container's worker
        # batches its path points by its own threads and memory budget).
        with gzip.open(offline) as f:
            expected = torch.load(io.BytesIO(f.read()), weights_only=True)
        got = torch.load(io.BytesIO(gzip.decompress(served)), weights_only=True)
        self.assertEqual(list(got), list(expected))
        self.assertEqual(int(got["target_class"]), int(expected["target_class"]))
        for key in ("integrated_grads", "integrated_directional_grads", "output"):
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-6, msg=key)

    def test_the_gpu_file_is_a_valid_addition(self):
        self.assertEqual(run("docker-compose", "-f", COMPOSE, "-f", os.path.join(DEPLOY, "docker-compose.gpu.yml"),
                             "config", check=False).returncode, 0)
        stack = run("docker", "stack", "config", "-c", COMPOSE, "-c", os.path.join(DEPLOY, "docker-stack.yml"), "-c",
                    os.path.join(DEPLOY, "docker-stack.gpu.yml"), check=False)
        self.assertEqual(stack.returncode, 0, stack.stderr)
        self.assertIn("NVIDIA-GPU", stack.stdout)


SWARM_NS = f"iswarm{os.getpid() % 100000}"
SWARM_ADDRESS = "10.234.0.2"
SWARM_SOCKET = f"unix:///run/intgrads-{SWARM_NS}.sock"


@unittest.skipUnless(os.geteuid() == 0, "needs root to install and run Docker")
class Swarm(unittest.TestCase):
    """docker stack deploy of deploy/docker-compose.yml on a one-node swarm.
    The swarm's dockerd runs in a network namespace of this test's, so that
    what it publishes on every interface is the namespace's; the images
    built by Compose are loaded into it."""

    @classmethod
    def setUpClass(cls):
        Compose.setUpClass()
        # Each step undone in reverse order however far setting up got.
        run("ip", "netns", "add", SWARM_NS)
        cls.addClassCleanup(run, "ip", "netns", "del", SWARM_NS, check=False)
        run("ip", "netns", "exec", SWARM_NS, "ip", "link", "set", "lo", "up")
        run("ip", "netns", "exec", SWARM_NS, "ip", "addr", "add", SWARM_ADDRESS + "/24", "dev", "lo")
        root = f"/var/lib/intgrads-{SWARM_NS}"
        cls.addClassCleanup(shutil.rmtree, root, True)
        dockerd = start_dockerd("-H", SWARM_SOCKET, "--data-root", root, "--exec-root", f"/run/{SWARM_NS}",
                                "--pidfile", f"/run/{SWARM_NS}.pid", host=SWARM_SOCKET, netns=SWARM_NS)
        cls.addClassCleanup(dockerd.wait, 60)
        cls.addClassCleanup(dockerd.terminate)
        for image in ("intgrads-gateway:latest", "intgrads-worker:latest"):
            with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE) as save:
                subprocess.run(["docker", "-H", SWARM_SOCKET, "load"], stdin=save.stdout, check=True,
                               capture_output=True)
        run("docker", "-H", SWARM_SOCKET, "swarm", "init", "--advertise-addr", SWARM_ADDRESS)
        cls.addClassCleanup(run, "docker", "-H", SWARM_SOCKET, "swarm", "leave", "--force", check=False)
        cls.addClassCleanup(run, "docker", "-H", SWARM_SOCKET, "stack", "rm", "intgrads", check=False)

    def in_namespace(self, *command, check=True):
        return run("ip", "netns", "exec", SWARM_NS, *command, check=check)

    def get(self, path):
        result = self.in_namespace("curl", "-s", "--max-time", "5", f"http://{SWARM_ADDRESS}:8888{path}", check=False)
        return result.stdout

    def test_the_compose_file_deploys_as_a_stack(self):
        env = dict(os.environ, DOCKER_HOST=SWARM_SOCKET, INTGRADS_MODEL="",
                   INTGRADS_MODEL_DIR=os.path.join(rm.REPO, "models"))
        run("docker", "stack", "deploy", "-c", COMPOSE, "-c", os.path.join(DEPLOY, "docker-stack.yml"), "intgrads",
            env=env)
        wait_until(lambda: len(json.loads(self.get("/v1/workers") or '{"workers": []}')["workers"]) == 2,
                   timeout=300, what="the stack's two workers (deploy: replicas)")
        body = json.dumps({"img_data": [[[1, 2, 3]] * 8] * 8, "target_class": "ship", "n_steps": 8})
        answer = self.in_namespace("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "120",
                                   f"http://{SWARM_ADDRESS}:8888/model/", "--data", body)
        self.assertEqual(answer.stdout, "200")
        services = run("docker", "-H", SWARM_SOCKET, "service", "ls", "--format", "{{.Name}} {{.Replicas}}").stdout
        self.assertIn("intgrads_worker 2/2", services)


if __name__ == "__main__":
    unittest.main()
