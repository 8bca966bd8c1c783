#!/usr/bin/env python3
"""Plots `intgrads-images path-scan --json` outputs: the share of
f(x) - f(baseline) reached at a on a log axis, one line per file, as a PNG
drawn with Pillow (no plotting library needed).

    /usr/bin/python3 benchmarks/plot_path_scan.py OUT.png LABEL=scan.json [LABEL=scan.json ...]"""

import json
import math
import sys

from PIL import Image, ImageDraw

W, H, LEFT, RIGHT, TOP, BOTTOM = 900, 520, 80, 20, 30, 60
COLOURS = [(200, 40, 40), (40, 90, 200), (30, 150, 60), (160, 100, 20)]


def main(out, specs):
    curves = []
    for spec in specs:
        label, path = spec.split("=", 1)
        scan = [p for p in json.load(open(path))["scan"] if p["a"] > 0]
        curves.append((label, [(math.log10(p["a"]), p["fraction_of_change"]) for p in scan]))
    xs = [x for _, c in curves for x, _ in c]
    lo_x, hi_x = min(xs), max(xs)
    lo_y, hi_y = -1.0, 4.5  # the share of the total change; clipped outside
    image = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(image)

    def at(x, y):
        y = min(max(y, lo_y), hi_y)
        return (LEFT + (x - lo_x) / (hi_x - lo_x) * (W - LEFT - RIGHT),
                H - BOTTOM - (y - lo_y) / (hi_y - lo_y) * (H - TOP - BOTTOM))

    draw.rectangle([LEFT, TOP, W - RIGHT, H - BOTTOM], outline="black")
    for y in (0, 1):
        draw.line([at(lo_x, y), at(hi_x, y)], fill=(180, 180, 180))
        draw.text((8, at(lo_x, y)[1] - 6), f"{y:.0f}", fill="black")
    for e in range(math.ceil(lo_x), math.floor(hi_x) + 1):
        draw.line([at(e, lo_y), at(e, hi_y)], fill=(225, 225, 225))
        draw.text((at(e, lo_y)[0] - 12, H - BOTTOM + 6), f"1e{e}", fill="black")
    draw.text((LEFT, H - 24), "a (log scale): the path point baseline + a (x - baseline)", fill="black")
    draw.text((LEFT, 8), "(f(a x) - f(baseline)) / (f(x) - f(baseline)), clipped to [-1, 4.5]", fill="black")
    for i, (label, points) in enumerate(curves):
        colour = COLOURS[i % len(COLOURS)]
        draw.line([at(x, y) for x, y in points], fill=colour, width=2)
        draw.text((LEFT + 10, TOP + 10 + 16 * i), label, fill=colour)
    image.save(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
