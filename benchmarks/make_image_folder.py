"""Write a folder of JPEG images with one sub-folder per class, for scale benchmarks and tests.

Each class has its own colour and stripe orientation, with noise and random sizes (so the model's
resize and centre crop have work to do); the same arguments always give the same files.

    python benchmarks/make_image_folder.py build/images-2k --n 2000 --classes 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def make_image_folder(
    out: Path, n: int, classes: int = 4, min_size: int = 200, max_size: int = 320, seed: int = 0
) -> Path:
    """Write ``n`` images (``img00000.jpg``...) spread evenly over ``classes`` class folders."""
    out.mkdir(parents=True, exist_ok=False)
    rng = np.random.default_rng(seed)
    names = [f"class{c}" for c in range(classes)]
    for name in names:
        (out / name).mkdir()
    hues = rng.uniform(0, 1, (classes, 3))
    for i in range(n):
        c = i % classes
        w, h = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = np.pi * c / classes + rng.normal(0, 0.15)
        stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / (6 + 2 * c))
        img = stripes[..., None] * hues[c] * 255 + rng.normal(0, 25, (h, w, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            out / names[c] / f"img{i:05d}.jpg", quality=85
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder to create (must not exist)")
    ap.add_argument("--n", type=int, default=2000, help="number of images")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.out.exists():
        print(f"error: {args.out} exists; choose a new folder", file=sys.stderr)
        return 2
    make_image_folder(args.out, args.n, args.classes, seed=args.seed)
    print(f"{args.n} images in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
