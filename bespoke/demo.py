"""Deterministic synthetic 24x24 punk portraits with captions in the user's format.

The embedded default data set: the smoke pipeline and the tests train and score on it.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image

from bespoke import safeio
from bespoke.errors import DataError
from bespoke.fsutil import atomic_write_bytes

SIZE = 24

BACKGROUNDS = {
    "green": (0x63, 0x8B, 0x6F), "pink": (0xE8, 0xA0, 0xB8), "blue": (0x63, 0x85, 0xB8),
    "purple": (0x8E, 0x6F, 0xB6), "grey": (0xA0, 0xB1, 0xA6), "yellow": (0xE6, 0xD2, 0x7A),
}
SKINS = {
    "light": (0xEA, 0xC4, 0xA4), "medium": (0xC6, 0x8E, 0x6A), "tan": (0xB0, 0x7A, 0x52),
    "medium dark": (0x94, 0x58, 0x4B), "dark": (0x5C, 0x3A, 0x2E), "pale": (0xF4, 0xDC, 0xC8),
}
HAIRS = {
    "black": (0x1C, 0x1A, 0x1E), "brown": (0x5A, 0x3A, 0x22), "blonde": (0xE0, 0xC0, 0x50),
    "red": (0xB0, 0x30, 0x20), "white": (0xF0, 0xF0, 0xF0), "green": (0x30, 0xA0, 0x40),
}
EYES = {"blue": (0x30, 0x60, 0xD0), "brown": (0x4F, 0x25, 0x26), "green": (0x2E, 0x8B, 0x3A), "hazel": (0x8A, 0x6A, 0x30)}
CLOTHES = {"grey turtleneck": (0x3E, 0x37, 0x3E), "red hoodie": (0xA0, 0x20, 0x28), "blue shirt": (0x28, 0x40, 0x90),
           "black jacket": (0x18, 0x18, 0x20)}
LIPS = (0x94, 0x40, 0x3B)
SUBJECTS = ["bespoke punk lad", "bespoke punk lady", "bespoke baby", "bespoke punk"]
HAIR_STYLES = ["short", "long", "mohawk", "curly"]


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _portrait(rng: random.Random):
    bg_name, bg = rng.choice(sorted(BACKGROUNDS.items()))
    skin_name, skin = rng.choice(sorted(SKINS.items()))
    hair_name, hair = rng.choice(sorted(HAIRS.items()))
    eye_name, eye = rng.choice(sorted(EYES.items()))
    cloth_name, cloth = rng.choice(sorted(CLOTHES.items()))
    style = rng.choice(HAIR_STYLES)
    subject = rng.choice(SUBJECTS)
    baby = "baby" in subject
    earring = rng.random() < 0.4

    px = [[bg] * SIZE for _ in range(SIZE)]

    def fill(x0, y0, x1, y1, c):
        for y in range(y0, y1):
            for x in range(x0, x1):
                px[y][x] = c

    top = 8 if baby else 6
    fill(7, top, 17, 20, skin)            # face
    fill(10, 20, 14, 21, skin)            # neck
    fill(4, 21, 20, 24, cloth)            # shoulders
    if style == "mohawk":
        fill(11, top - 4, 13, top + 1, hair)
    elif style == "long":
        fill(6, top - 2, 18, top + 1, hair)
        fill(6, top, 8, 20, hair)
        fill(16, top, 18, 20, hair)
    elif style == "curly":
        for x in range(6, 18, 2):
            fill(x, top - 2, x + 1, top + 1, hair)
        fill(6, top - 1, 18, top + 1, hair)
    else:
        fill(7, top - 2, 17, top + 1, hair)
    fill(9, 12, 10, 13, eye)
    fill(14, 12, 15, 13, eye)
    fill(11, 17, 14, 18, LIPS)
    if earring:
        fill(17, 15, 18, 16, (0xF0, 0xF0, 0xF0))

    img = Image.new("RGB", (SIZE, SIZE))
    img.putdata([c for row in px for c in row])
    palette = [bg, skin, hair, eye, cloth, LIPS] + ([(0xF0, 0xF0, 0xF0)] if earring else [])
    caption = (
        f"pixel art, 24x24, portrait of {subject}, {style} {hair_name} hair ({_hex(hair)}), "
        + ("wearing white earring (#f0f0f0), " if earring else "")
        + f"{eye_name} eyes ({_hex(eye)}), lips ({_hex(LIPS)}), {skin_name} skin tone ({_hex(skin)}), "
        f"{bg_name} background ({_hex(bg)}), {cloth_name} ({_hex(cloth)}), "
        f"palette: {', '.join(_hex(c) for c in dict.fromkeys(palette))}, "
        "sharp pixel edges, hard color borders, retro pixel art style"
    )
    return img, caption


def make_sprite(seed: int) -> Image.Image:
    """One 24x24 RGB portrait, the same for the same seed."""
    return _portrait(random.Random(seed))[0]


def make_portrait(seed: int) -> tuple[Image.Image, str]:
    """One portrait and its caption, the same for the same seed."""
    return _portrait(random.Random(seed))


def write_demo_data(out: Path, count: int = 12, seed: int = 0) -> list[Path]:
    """Write `count` portraits as demo_NNN.png + demo_NNN.txt into `out`; returns the image paths.

    Portraits are distinct: a seed whose pixels repeat an earlier one is skipped.
    A file of another content already at one of those names is the user's: refused, nothing written.
    """
    out = Path(out)
    seen, files, s = set(), [], seed * 100_003
    while len(files) < count:
        img, caption = make_portrait(s)
        s += 1
        key = img.tobytes()
        if key in seen:
            continue
        seen.add(key)
        path = out / f"demo_{len(files):03d}.png"
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        files.append((path, buf.getvalue(), (caption + "\n").encode()))
    for path, png, text in files:
        for p, data in ((path, png), (path.with_suffix(".txt"), text)):
            if p.exists() and (not p.is_file() or p.stat().st_size != len(data) or p.read_bytes() != data):
                raise DataError(f"{p.name} is already there and is not this demo's", safeio.show(p),
                                "pick an empty --out folder (demo-data writes demo_NNN.png and .txt)")
    out.mkdir(parents=True, exist_ok=True)
    for path, png, text in files:
        atomic_write_bytes(path, png)
        atomic_write_bytes(path.with_suffix(".txt"), text)
    return [path for path, _, _ in files]
