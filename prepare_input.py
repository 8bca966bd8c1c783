"""Writes the JSON body of POST /model/ for an image, as the original server's
prepare_input.py did, with one fix: grey, RGBA and palette images are
converted to RGB first (the original passed them through and the server
then failed).

usage: python prepare_input.py /path/to/image.jpeg airplane input_json_file.json"""

import argparse
import json

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", help="path of a PNG, JPEG or other image Pillow reads")
    parser.add_argument("target_class", help="the class to explain, one of: " + ", ".join(CLASSES))
    parser.add_argument("output", help="where to write the JSON")
    args = parser.parse_args()
    image = Image.open(args.image).convert("RGB")
    with open(args.output, "w") as f:
        json.dump({"img_data": np.asarray(image).tolist(), "target_class": args.target_class}, f,
                  separators=(",", ":"))


if __name__ == "__main__":
    main()
