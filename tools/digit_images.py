"""Write the bundled digits as a folder of 16x16 grey PNG images, one sub-folder per class
(`0` .. `9`): an image folder to try `image_folder` on (`tests/specs/digits_images.dnn`).

Each 8x8 image (pixels 0..16) is scaled to 0..255 and resized bilinearly by Pillow.
Usage: python tools/digit_images.py OUT_FOLDER
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image


def write(folder: Path, size: int = 16) -> int:
    """Write every digit as `folder/<class>/<index>.png`; returns how many."""
    with (
        resources.files("dnnspec").joinpath("data/digits.npz").open("rb") as f,
        np.load(f, allow_pickle=False) as npz,
    ):
        x, y = npz["x"], npz["y"]
    for index, (pixels, label) in enumerate(zip(x, y, strict=True)):
        grey = (pixels.reshape(8, 8).astype(np.float64) * 255 / 16).round().astype(np.uint8)
        image = Image.fromarray(grey, "L").resize((size, size), Image.Resampling.BILINEAR)
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        image.save(folder / str(label) / f"{index:04d}.png")
    return len(y)


if __name__ == "__main__":
    print(f"wrote {write(Path(sys.argv[1]))} images under {sys.argv[1]}")
