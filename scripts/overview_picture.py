"""Draw README's picture: the bundled models on one val image of the synthetic benchmark.

    groundkit generate --out /tmp/ov --seed 0 --train 0 --val 5 --test 0
    python scripts/overview_picture.py --image /tmp/ov/images/val/000002000005.png \\
        --caption "In the picture I can see [the orange circle], [both black stars] and [a road]." \\
        --expression "the orange circle" --out docs/images/overview.png
"""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from groundkit import Grounder, Referrer, Segmenter
from groundkit.visualize import contact_sheet, save_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--caption", default="There are [two red shapes] on [the grass].")
    parser.add_argument("--expression", default="the red circle")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    image = np.asarray(Image.open(args.image).convert("RGB"))
    g = Grounder.from_pretrained("ppmn-synthetic")
    s = Segmenter.from_pretrained("panoptic-synthetic")
    r = Referrer.from_pretrained("matcher-synthetic")
    pictures = [g.draw(image, g.predict_one(image, args.caption)),
                s.draw(image, s.predict_one(image)),
                r.draw(image, r.predict_one(image, args.expression))]
    titles = ["narrative grounding (ppmn-synthetic)", "panoptic segmentation (panoptic-synthetic)",
              "referring expression (matcher-synthetic)"]
    save_image(contact_sheet(pictures, columns=3, titles=titles), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
