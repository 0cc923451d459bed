"""Milliseconds per 1024x1024 image for pixelart.score + pixelate, on one core.

The budget (issue 5) is 50 ms per image for score plus pixelate. Decoding the PNG is shown apart:
it is Pillow's cost, paid once per sample whatever we measure.

    python bench/bench_pixelart.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import io
import os
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, before numpy loads
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

from bespoke import pixelart  # noqa: E402
from bespoke.demo import make_sprite  # noqa: E402

BUDGET_MS = 50.0


def cases() -> dict[str, Image.Image]:
    sprite = make_sprite(7)
    clean = sprite.resize((1024, 1024), Image.Resampling.NEAREST)
    noise = np.random.default_rng(0).normal(0, 8, (1024, 1024, 3))
    noisy = Image.fromarray(np.clip(np.asarray(clean) + noise, 0, 255).astype(np.uint8))
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).resize(
        (1024, 1024), Image.Resampling.BICUBIC
    )
    return {
        "clean nearest": clean,
        "noisy": noisy,
        "blurred": clean.filter(ImageFilter.GaussianBlur(10)),
        "photo-like": photo,
    }


def best_ms(fn, repeat: int) -> float:
    fn()  # warm caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times), 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    palette = pixelart.Palette(colours=np.unique(np.asarray(make_sprite(7)).reshape(-1, 3), axis=0), count_range=(2, 14))

    print(f"{'image (1024x1024)':<18} {'score':>8} {'pixelate':>9} {'both':>8} {'median':>8} {'decode':>8}  budget")
    for name, img in cases().items():
        rgb = np.asarray(img)
        png = io.BytesIO()
        img.save(png, "PNG")
        s, _ = best_ms(lambda rgb=rgb: pixelart.score(rgb, palette=palette), args.repeat)
        p, _ = best_ms(lambda rgb=rgb: pixelart.pixelate(rgb, palette=palette), args.repeat)
        both, both_median = best_ms(
            lambda rgb=rgb: (pixelart.score(rgb, palette=palette), pixelart.pixelate(rgb, palette=palette)),
            args.repeat,
        )
        d, _ = best_ms(lambda png=png: np.asarray(Image.open(io.BytesIO(png.getvalue())).convert("RGB")), args.repeat)
        verdict = "ok" if both_median <= BUDGET_MS else "OVER"
        print(f"{name:<18} {s:8.1f} {p:9.1f} {both:8.1f} {both_median:8.1f} {d:8.1f}  {verdict}")
    print("ms per image, best of", args.repeat, "(median for 'both'); score and pixelate with a palette, one core")


if __name__ == "__main__":
    main()
