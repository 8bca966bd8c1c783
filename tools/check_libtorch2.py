#!/usr/bin/python3
"""Compiles every source that includes LibTorch against LibTorch 2.x headers.

The build uses Debian 12's LibTorch 1.13; GPU workers build against a CUDA
PyTorch's bundled LibTorch 2.x. This checks the second without a GPU: it
fetches the headers of Debian's current stable libtorch-dev (2.6 in Debian
13) from the Debian archive, once, and runs the compiler over each
translation unit of build/compile_commands.json that includes LibTorch, with
those headers in place of 1.13's and -fsyntax-only (nothing is linked).

    /usr/bin/python3 tools/check_libtorch2.py [--build build] [--jobs 2]

Exit status 0 when every file compiles without a diagnostic, 1 otherwise, 2
when the headers cannot be fetched.
"""
import argparse
import concurrent.futures
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import urllib.request

ARCHIVE = "http://deb.debian.org/debian"
SUITE = "stable"
TORCH_API_INCLUDE = "-isystem /usr/include/torch/csrc/api/include"


def newest_libtorch_dev(packages_index):
    """(version, pool path) of libtorch-dev in a Packages index."""
    for stanza in packages_index.split("\n\n"):
        if re.search(r"^Package: libtorch-dev$", stanza, re.M):
            version = re.search(r"^Version: (.+)$", stanza, re.M).group(1)
            filename = re.search(r"^Filename: (.+)$", stanza, re.M).group(1)
            return version, filename
    return None


def fetch_headers(cache):
    """The include directory of the stable libtorch-dev, extracted under cache."""
    marker = os.path.join(cache, "version")
    if os.path.exists(marker):
        with open(marker) as f:
            print("LibTorch headers: libtorch-dev", f.read().strip(), "(cached in", cache + ")")
        return os.path.join(cache, "root", "usr", "include")
    index_url = f"{ARCHIVE}/dists/{SUITE}/main/binary-amd64/Packages.xz"
    with urllib.request.urlopen(index_url, timeout=120) as response:
        index = lzma.decompress(response.read()).decode("utf-8", "replace")
    found = newest_libtorch_dev(index)
    if found is None:
        raise RuntimeError(f"no libtorch-dev in {index_url}")
    version, filename = found
    os.makedirs(cache, exist_ok=True)
    deb = os.path.join(cache, os.path.basename(filename))
    with urllib.request.urlopen(f"{ARCHIVE}/{filename}", timeout=300) as response, open(deb, "wb") as out:
        shutil.copyfileobj(response, out)
    root = os.path.join(cache, "root")
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    os.remove(deb)
    with open(marker, "w") as f:
        f.write(version + "\n")
    print("LibTorch headers: libtorch-dev", version, "from", f"{ARCHIVE}/{filename}")
    return os.path.join(root, "usr", "include")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default="build", help="the CMake build directory (compile_commands.json)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    cache = os.path.abspath(os.path.join(args.build, "libtorch2-headers"))
    try:
        include = fetch_headers(cache)
    except Exception as error:  # the archive unreachable: say so, do not pass
        print("cannot fetch the LibTorch 2.x headers:", error, file=sys.stderr)
        return 2
    with open(os.path.join(args.build, "compile_commands.json")) as f:
        entries = json.load(f)
    replacement = f"-isystem {include} -isystem {include}/torch/csrc/api/include"
    jobs = []
    for entry in entries:
        command = entry["command"]
        if TORCH_API_INCLUDE not in command:
            continue
        command = command.replace(TORCH_API_INCLUDE, replacement).split(" -o ")[0]
        jobs.append((entry["file"], entry["directory"], f"{command} -fsyntax-only -c {entry['file']}"))

    def compile_one(job):
        source, directory, command = job
        result = subprocess.run(command, shell=True, cwd=directory, capture_output=True, text=True)
        return source, result.returncode, result.stderr

    failed = 0
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for source, returncode, stderr in pool.map(compile_one, jobs):
            if returncode != 0 or stderr.strip():
                failed += 1
                print(f"FAILED {os.path.relpath(source)} (exit {returncode})\n{stderr}")
    print(f"{len(jobs) - failed} of {len(jobs)} files that include LibTorch compile against its 2.x headers")
    return 1 if failed or not jobs else 0


if __name__ == "__main__":
    sys.exit(main())
