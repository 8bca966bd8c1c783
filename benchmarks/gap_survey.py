#!/usr/bin/python3
"""The completeness gap of every method over many CIFAR-10 test images.

For the first --images images of test.zip, taken class by class (the first
of each class, then the second, ...), each image's own class the target:
`intgrads-images path-scan --json` on the model (the embedded default model
unless model flags follow `--`), then, for every method and n_steps of
path-scan, the median and the largest gap |sum(IG) - (f(x) - f(baseline))| /
|f(x) - f(baseline)| over the images and the share of images under 1%.
docs/FAITHFULNESS.md reports it for the default model (~8 s an image on the
2-core build machine).

    /usr/bin/python3 benchmarks/gap_survey.py [--images 30] [--json] [-- MODEL FLAGS]
    /usr/bin/python3 benchmarks/gap_survey.py --render SAVED.json
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from trained_bit import INTGRADS, first_test_images, path_scan, read_images, summarize  # noqa: E402
import reference_models as rm  # noqa: E402  (on the path through trained_bit)

TARGET = 0.01  # the faithfulness issue's gap at n_steps 50


def survey(count, threads, model_flags):
    """path-scan's JSON for each chosen image, with its name."""
    names = first_test_images(count)
    with tempfile.TemporaryDirectory() as work:
        return [path_scan(name, image, [*model_flags, "--points", "2"], threads, work)
                for name, image in zip(names, read_images(rm.CIFAR10_TEST_ZIP, names))]


def render(result):
    n_steps = result["n_steps"]
    at50 = n_steps.index(50)
    methods = list(result["summary"])
    flags = " ".join(result["model_flags"]) or "(default model)"
    lines = [f"{len(result['images'])} test images, model flags: {flags}",
             "", "| method, over the images | " + " | ".join(f"n_steps {n}" for n in n_steps) + " |",
             "| --- |" + " --- |" * len(n_steps)]
    for m in methods:
        stats = result["summary"][m]
        for stat in ("median", "largest"):
            lines.append(f"| {m}, {stat} | " + " | ".join(f"{g:.2e}" for g in stats[stat]) + " |")
        lines.append(f"| {m}, share under {TARGET:.0%} | " + " | ".join(f"{s:.0%}" for s in stats["under_target"])
                     + " |")
    lines += ["", "| test image | f(x) - f(baseline) | " + " | ".join(f"{m}, n_steps 50" for m in methods) + " |",
              "| --- | --- |" + " --- |" * len(methods)]
    for image in result["images"]:
        lines.append(f"| {image['image']} | {image['change']:.4g} | "
                     + " | ".join(f"{image['gap_fraction'][m][at50]:.2e}" for m in methods) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--render", metavar="FILE", help="print the tables of a saved --json output, and stop")
    parser.add_argument("model_flags", nargs="*", help="after --: path-scan's model flags (default: the default model)")
    args = parser.parse_args()
    if args.render:
        with open(args.render) as f:
            print(render(json.load(f)))
        return
    if not os.path.exists(rm.CIFAR10_TEST_ZIP):
        raise SystemExit(f"needs CIFAR-10's test.zip at {rm.CIFAR10_TEST_ZIP}")
    if not os.path.exists(INTGRADS):
        raise SystemExit(f"needs {INTGRADS}: build first (tools/build.sh; INTGRADS_BIN names another folder)")
    scans = survey(args.images, args.threads, args.model_flags)
    methods = list(scans[0]["gap_fraction"])
    summary = summarize(scans, methods)
    for m in methods:
        summary[m]["under_target"] = [sum(s["gap_fraction"][m][i] < TARGET for s in scans) / len(scans)
                                      for i in range(len(scans[0]["n_steps"]))]
    result = {"model_flags": args.model_flags, "n_steps": scans[0]["n_steps"], "summary": summary,
              "images": [{"image": s["image"], "change": s["f_x"] - s["f_baseline"],
                          "gap_fraction": s["gap_fraction"]} for s in scans]}
    print(json.dumps(result) if args.json else render(result))


if __name__ == "__main__":
    main()
