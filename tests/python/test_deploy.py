"""The docker-compose deployment, checked without a Docker engine (the
`docker`-labelled test_compose.py runs it): the YAML parses, every file it
names exists, and every command in it (compose and the Dockerfile's stages)
is a program we build, run with flags that program accepts."""

import json
import os
import re
import subprocess
import unittest

import yaml

from service import BIN

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, "deploy")


def flags_of(program):
    """The flags a program's --help lists."""
    text = subprocess.run([os.path.join(BIN, program), "--help"], capture_output=True, text=True).stdout
    return set(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", text))


def check_command(test, program, args):
    accepted = flags_of(program)
    for arg in args:
        if arg.startswith("-"):
            test.assertIn(arg, accepted, f"{program} does not accept {arg}")


def dockerfile_stages():
    """{stage: (program, default args)} from the Dockerfile's ENTRYPOINT and CMD (JSON form, continued lines)."""
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        text = re.sub(r"\\\n\s*", " ", f.read())
    stages, stage = {}, None
    for line in text.splitlines():
        if line.startswith("FROM"):
            stage = line.split()[-1]
        elif line.startswith("ENTRYPOINT"):
            stages[stage] = (os.path.basename(json.loads(line[len("ENTRYPOINT"):])[0]), [])
        elif line.startswith("CMD"):
            stages[stage] = (stages[stage][0], json.loads(line[len("CMD"):]))
    return stages


class Compose(unittest.TestCase):
    def load(self, name):
        with open(os.path.join(DEPLOY, name)) as f:
            return yaml.safe_load(f)

    def test_compose_files_parse_and_name_existing_files(self):
        for name in ("docker-compose.yml", "docker-compose.gpu.yml", "docker-stack.yml", "docker-stack.gpu.yml"):
            doc = self.load(name)
            self.assertIn("services", doc, name)
            for service in doc["services"].values():
                build = service.get("build")
                if build:
                    context = os.path.normpath(os.path.join(DEPLOY, build["context"]))
                    self.assertTrue(os.path.isdir(context), context)
                    self.assertTrue(os.path.isfile(os.path.join(context, build["dockerfile"])), build["dockerfile"])
                    self.assertIn(build["target"], dockerfile_stages())

    def test_commands_are_ours_and_their_flags_exist(self):
        base = self.load("docker-compose.yml")["services"]
        stages = dockerfile_stages()
        for stage in ("gateway", "worker"):
            program, default_args = stages[stage]
            self.assertTrue(os.path.isfile(os.path.join(BIN, program)), program)
            check_command(self, program, default_args)
            check_command(self, program, base[stage]["command"])
        for name in ("docker-compose.gpu.yml", "docker-stack.gpu.yml"):
            check_command(self, "intgrads-worker", self.load(name)["services"]["worker"]["command"])
        keygen = base["keygen"]["entrypoint"]
        self.assertEqual(os.path.basename(keygen[0]), "intgrads-keygen")
        self.assertIn("--keep", keygen)
        # Workers reach the gateway where the gateway binds its worker socket,
        # with the keys the keygen service makes.
        gateway, worker = base["gateway"]["command"], base["worker"]["command"]
        bind, connect = gateway[gateway.index("--bind-workers") + 1], worker[worker.index("--connect") + 1]
        self.assertEqual(bind.rsplit(":", 1)[1], connect.rsplit(":", 1)[1])
        self.assertEqual(connect.split("//")[1].split(":")[0], "gateway")
        made = {os.path.basename(p) for p in keygen[2:]}
        for command, flag, suffix in ((gateway, "--secret-key", ".key"), (gateway, "--worker-keys", ".pub"),
                                      (worker, "--secret-key", ".key"), (worker, "--gateway-key", ".pub")):
            path = command[command.index(flag) + 1]
            self.assertIn(os.path.basename(path)[:-len(suffix)], made, path)
            self.assertTrue(path.endswith(suffix), path)

    def test_health_checks_use_real_routes(self):
        check = self.load("docker-compose.yml")["services"]["gateway"]["healthcheck"]["test"]
        self.assertEqual(os.path.basename(check[1]), "intgrads-gateway")
        self.assertEqual(check[2], "--probe")
        url = check[3]
        # Liveness: a restart for a gateway that answers nothing, none for one waiting for workers.
        self.assertTrue(url.endswith("/healthz"), url)
        with open(os.path.join(REPO, "gateway", "routes.cc")) as f:
            self.assertRegex(f.read(), r'\{"GET", "/healthz", RouteHandler::\w+, true\}')  # open: no token needed
        command = self.load("docker-compose.yml")["services"]["gateway"]["command"]
        self.assertEqual(command[command.index("--port") + 1], url.split(":")[2].split("/")[0])

    def test_the_stack_reaches_the_gateway_without_the_routing_mesh(self):
        gateway = self.load("docker-stack.yml")["services"]["gateway"]
        self.assertEqual(gateway["deploy"]["endpoint_mode"], "dnsrr")
        self.assertEqual([(p["target"], p["mode"]) for p in gateway["ports"]], [(8888, "host")])

    def test_gpu_variants_reserve_one_gpu_per_worker(self):
        worker = self.load("docker-compose.gpu.yml")["services"]["worker"]
        devices = worker["deploy"]["resources"]["reservations"]["devices"]
        self.assertEqual(devices[0]["count"], 1)
        self.assertIn("gpu", devices[0]["capabilities"])
        self.assertIn("--cuda", worker["command"])
        stack = self.load("docker-stack.gpu.yml")["services"]["worker"]["deploy"]
        resource = stack["resources"]["reservations"]["generic_resources"][0]["discrete_resource_spec"]
        self.assertEqual((resource["kind"], resource["value"]), ("NVIDIA-GPU", 1))
        self.assertIn("node.labels.gpu == true", stack["placement"]["constraints"])

    def test_the_dockerfile_installs_with_our_script(self):
        with open(os.path.join(DEPLOY, "Dockerfile")) as f:
            text = f.read()
        self.assertIn("tools/install-deps.sh --build", text)
        for path in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
            self.assertTrue(os.path.exists(os.path.join(REPO, path)), path)
        self.assertEqual(re.findall(r"^FROM (\S+) AS (\w+)", text, re.M)[1:], [("scratch", "gateway"),
                                                                              ("scratch", "worker")])


if __name__ == "__main__":
    unittest.main()
