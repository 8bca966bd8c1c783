"""The client's command line: python3 -m intgrads_client --help."""

import argparse
import json
import os
import sys

from . import Client, ServiceError, explain_all, read_inputs


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="intgrads-client",
        description="Integrated gradients of images from an intgrads-images service.")
    parser.add_argument("--server", default=os.environ.get("INTGRADS_SERVER", "http://localhost:8888"),
                        help="the service (default http://localhost:8888 or $INTGRADS_SERVER); several gateways "
                             "of one pool comma-separated: a request whose gateway is unreachable goes to the next")
    parser.add_argument("--token", default=None, help="the service's bearer token (default $INTGRADS_TOKEN)")
    parser.add_argument("--model", default=None, help="the model's name, when the service serves several")
    commands = parser.add_subparsers(dest="command", required=True)

    explain = commands.add_parser(
        "explain", help="explain images, folders and CIFAR-style zips, one output file each",
        description="Sends each image (PNG or JPEG; folders are read recursively, zips as CIFAR-style archives) "
                    "with --concurrency requests at a time, writes one output each under --out (mirroring the "
                    "folders), skips those already written (a second run resumes), and writes summary.csv and "
                    "summary.json beside them.")
    explain.add_argument("inputs", nargs="+", help="image files, folders or zips")
    explain.add_argument("--out", required=True, help="the output folder")
    explain.add_argument("--target", default="predicted", help="class name or index, a list 'cat,dog', or 'predicted'")
    explain.add_argument("--format", default="npz",
                         help="one of the formats the service writes, as GET /v1/model lists them (default npz)")
    explain.add_argument("--n-steps", "--n_steps", type=int, default=None, dest="n_steps")
    explain.add_argument("--method", default=None)
    explain.add_argument("--concurrency", type=int, default=None,
                         help="requests at a time (default: the pool's worker count, from /v1/workers)")
    explain.add_argument("--overwrite", action="store_true", help="compute again what is already written")
    explain.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                         help="another of the service's parameters (baseline=blur, smoothgrad_samples=8, ...)")

    commands.add_parser("model", help="print the served model (GET /v1/model) as JSON")

    args = parser.parse_args(argv)
    client = Client(args.server, token=args.token, model=args.model)
    try:
        if args.command == "model":
            print(json.dumps(client.model(), indent=2))
            return 0
        options = dict(option.split("=", 1) for option in args.option)
        if args.n_steps is not None:
            options["n_steps"] = args.n_steps
        if args.method is not None:
            options["method"] = args.method
        summary = explain_all(client, read_inputs(args.inputs), args.out, target=args.target, format=args.format,
                              concurrency=args.concurrency, resume=not args.overwrite, progress=sys.stderr,
                              **options)
    except (ServiceError, OSError, ValueError) as e:
        print(f"intgrads-client: {e}", file=sys.stderr)
        return 2
    failed = sum(1 for row in summary if row["status"] == "error")
    print(f"{len(summary)} image(s), {failed} failed; summary in {os.path.join(args.out, 'summary.csv')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
