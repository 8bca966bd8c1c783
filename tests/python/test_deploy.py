"""The docker-compose deployment, checked without a Docker engine: the YAML
parses, every file it names exists, and every command in it (compose and
Dockerfiles) is a program we build, run with flags that program accepts."""

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
    text = subprocess.run([os.path.join(BIN, program), "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", text))


def check_command(test, program, args):
    accepted = flags_of(program)
    for arg in args:
        if arg.startswith("-"):
            test.assertIn(arg, accepted, f"{program} does not accept {arg}")


def dockerfile_entry(path):
    """(program, default args) from a Dockerfile's ENTRYPOINT and CMD (JSON form)."""
    import json

    entry, cmd = None, []
    with open(path) as f:
        for line in f:
            if line.startswith("ENTRYPOINT"):
                entry = json.loads(line[len("ENTRYPOINT"):])
            elif line.startswith("CMD"):
                cmd = json.loads(line[len("CMD"):])
    return os.path.basename(entry[0]), cmd


class Compose(unittest.TestCase):
    def load(self, name):
        with open(os.path.join(DEPLOY, name)) as f:
            return yaml.safe_load(f)

    def test_compose_files_parse_and_name_existing_files(self):
        for name in ("docker-compose.yml", "docker-compose.gpu.yml"):
            doc = self.load(name)
            self.assertIn("services", doc, name)
            for service in doc["services"].values():
                build = service.get("build")
                if build:
                    context = os.path.normpath(os.path.join(DEPLOY, build["context"]))
                    self.assertTrue(os.path.isdir(context), context)
                    self.assertTrue(os.path.isfile(os.path.join(context, build["dockerfile"])), build["dockerfile"])

    def test_commands_are_ours_and_their_flags_exist(self):
        base = self.load("docker-compose.yml")["services"]
        gpu = self.load("docker-compose.gpu.yml")["services"]
        for service, dockerfile in (("gateway", "Dockerfile.gateway"), ("worker", "Dockerfile.worker")):
            program, default_args = dockerfile_entry(os.path.join(DEPLOY, dockerfile))
            self.assertTrue(os.path.isfile(os.path.join(BIN, program)), program)
            check_command(self, program, default_args)
            check_command(self, program, base[service]["command"])
            if service in gpu:
                check_command(self, program, gpu[service]["command"])
        # Workers reach the gateway where the gateway binds its worker socket.
        gateway_bind = base["gateway"]["command"][base["gateway"]["command"].index("--bind-workers") + 1]
        connect = base["worker"]["command"][base["worker"]["command"].index("--connect") + 1]
        self.assertEqual(gateway_bind.rsplit(":", 1)[1], connect.rsplit(":", 1)[1])
        self.assertEqual(connect.split("//")[1].split(":")[0], "gateway")

    def test_health_checks_use_real_routes(self):
        check = self.load("docker-compose.yml")["services"]["gateway"]["healthcheck"]["test"]
        url = check[-1]
        self.assertTrue(url.endswith("/readyz"), url)
        with open(os.path.join(REPO, "gateway", "http_api.cc")) as f:
            self.assertIn('"/readyz"', f.read())
        command = self.load("docker-compose.yml")["services"]["gateway"]["command"]
        self.assertEqual(command[command.index("--port") + 1], url.split(":")[2].split("/")[0])

    def test_gpu_variant_reserves_one_gpu_per_worker(self):
        worker = self.load("docker-compose.gpu.yml")["services"]["worker"]
        devices = worker["deploy"]["resources"]["reservations"]["devices"]
        self.assertEqual(devices[0]["count"], 1)
        self.assertIn("gpu", devices[0]["capabilities"])
        self.assertIn("--cuda", worker["command"])

    def test_dockerfiles_install_with_our_script(self):
        for dockerfile in ("Dockerfile.gateway", "Dockerfile.worker"):
            with open(os.path.join(DEPLOY, dockerfile)) as f:
                text = f.read()
            self.assertIn("tools/install-deps.sh", text)
            for path in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
                self.assertTrue(os.path.exists(os.path.join(REPO, path)), path)


if __name__ == "__main__":
    unittest.main()
