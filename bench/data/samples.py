"""Small image folders written to disk in ImageNet's layout, for checks and tests of the
streamed data path (`imagefolder:PATH`) where no real image set is at hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_image_folder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "fox"),
    counts: tuple[tuple[str, int], ...] = (("train", 8), ("val", 3)),
    seed: int = 0,
) -> Path:
    """`root/<split>/<class>/<i>.{jpg,png}` with `counts` images per class and split: odd sizes
    (24 to 47 px a side), JPEG and PNG alternating, and each class brightest in its own colour
    channel, so labels can be learnt from colour. Returns `root`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in counts:
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(24, 48, size=2)
                pixels = rng.integers(0, 96, size=(h, w, 3), dtype=np.uint8)
                pixels[..., c % 3] += 150
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(pixels).save(folder / f"{i}.{ext}")
    return root
