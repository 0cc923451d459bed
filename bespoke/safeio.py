"""Reading what the user hands us, safely: one reader for files, one for zip entries, one image opener.

Every input bespoke reads goes through here, so the rules hold everywhere:
- only regular files are opened (a FIFO, socket or device is named and refused, never opened to block);
- a file or zip entry is capped by the bytes actually read (or inflated), never by what its header says;
- an image's declared size is checked before a pixel is decoded (decompression bombs);
- every Pillow mode becomes RGB with its distinct colours kept (16-bit grey is scaled, not clipped to
  white), or is refused by name;
- a name is shown with repr-like escaping (`show`), so a newline or escape byte in it cannot split or
  colour an error message.
Each refusal is an `InputError`: what is wrong, which file, and the fix, in one line.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import unicodedata
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from bespoke.errors import BIDI, BespokeError, show

MAX_IMAGE_BYTES = 64 << 20  # a 24x24 sprite is < 4 KB, a 1024 px render a few MB
MAX_TEXT_BYTES = 64 << 10  # a caption is a few hundred bytes
MAX_PIXELS = 8192 * 8192  # renders up to 8192x8192; Pillow's own bomb limit is far higher (89M px)
MAX_ZIP_ENTRIES = 100_000

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}
# Bidirectional overrides reorder what a terminal shows (the "trojan source" trick).


class InputError(BespokeError):
    """A file the user gave cannot be read safely; `problem()` is its one-line entry in a list."""

    def problem(self) -> str:
        return f"{self.where}: {self.what}; {self.fix}" if self.fix else f"{self.where}: {self.what}"


def name_problem(name: str) -> str | None:
    """Why a file name cannot be used as is (bespoke writes a file of the same stem), or None."""
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in name):
        return "its name is not valid UTF-8"
    if any(unicodedata.category(c) == "Cc" for c in name) or BIDI.intersection(name):
        return "its name has control characters"
    return None


def text_problem(text: str) -> str | None:
    """Why decoded caption text is unsafe to copy (NUL, terminal escapes, bidi overrides), or None."""
    for i, ch in enumerate(text):
        if (unicodedata.category(ch) == "Cc" and ch not in "\t\n\r") or ch in BIDI:
            return f"has the control character {ch.encode('unicode_escape').decode('ascii')} at character {i + 1}"
    return None


# --- files ---------------------------------------------------------------------------------------

def _os_problem(e: OSError) -> tuple[str, str]:
    if e.errno == errno.ELOOP:
        return "is a symlink loop", "point the link at a real file or remove it"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "cannot be read (permission denied)", "make it readable (chmod a+r) or remove it"
    if e.errno == errno.ENOENT:
        return "is a broken symlink", "point it at a file that exists or remove it"
    if e.errno == errno.ENAMETOOLONG:
        return "has a name too long for this file system", "rename it"
    return f"cannot be read ({e.strerror or e})", "replace or remove it"


def kind(st: os.stat_result) -> str | None:
    """What a non-regular file is ('a FIFO (named pipe)'...), or None for a regular file."""
    return None if stat.S_ISREG(st.st_mode) else _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")


def regular_file(path: Path | str) -> os.stat_result:
    """stat (following links) and refuse anything but a regular file, without opening it."""
    shown = show(path)
    try:
        st = os.stat(path)
    except OSError as e:
        what, fix = _os_problem(e)
        raise InputError(what, shown, fix) from None
    if (k := kind(st)) is not None:
        raise InputError(f"is {k}, not a file", shown, "remove it or replace it with a regular file")
    return st


def read_file(path: Path | str, limit: int) -> bytes:
    """A regular file's bytes, at most `limit`; a FIFO or device is refused before it is opened."""
    shown = show(path)
    regular_file(path)
    try:
        # O_NONBLOCK: should the file be swapped for a FIFO after the stat, opening it does not block.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        what, fix = _os_problem(e)
        raise InputError(what, shown, fix) from None
    with os.fdopen(fd, "rb") as f:
        if (k := kind(os.fstat(fd))) is not None:
            raise InputError(f"is {k}, not a file", shown, "remove it or replace it with a regular file")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            what, fix = _os_problem(e)
            raise InputError(what, shown, fix) from None
    if len(data) > limit:
        raise InputError(f"is larger than {_size(limit)}", shown, "this cannot be a sprite or caption; remove it")
    return data


def read_zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, shown: str) -> bytes:
    """A zip entry's bytes, inflated at most `limit` (counted as they inflate, not from the header)."""
    out = bytearray()
    try:
        with zf.open(info) as f:
            while chunk := f.read(min(1 << 16, limit + 1 - len(out))):
                out += chunk
                if len(out) > limit:
                    raise InputError(f"inflates to more than {_size(limit)}", shown,
                                     "this cannot be a sprite or caption (a zip bomb?); rebuild the zip")
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as e:
        raise InputError(f"is a corrupt zip entry ({e})", shown, "rebuild the zip") from None
    except NotImplementedError as e:  # a compression zipfile lacks (a RuntimeError, so first)
        raise InputError(f"uses an unsupported compression ({e})", shown, "zip it again with deflate") from None
    except RuntimeError:  # encrypted
        raise InputError("is encrypted", shown, "zip it again without a password") from None
    return bytes(out)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def image_files(folder: Path | str, suffixes) -> list[Path]:
    """Files under `folder` with these suffixes, sorted; symlinked folders are not followed (no loops)
    and FIFOs, sockets and devices are left out (reading them would block or make no sense)."""
    found = []
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            p = Path(dirpath, name)
            if p.suffix.lower() in suffixes:
                try:
                    if stat.S_ISREG(os.stat(p).st_mode):
                        found.append(p)
                except OSError:
                    found.append(p)  # a loop or broken link: reading it names it in one line
    return sorted(found)


# --- images --------------------------------------------------------------------------------------

def open_image(data: bytes, shown: str, max_pixels: int = MAX_PIXELS, expect: tuple[int, int] | None = None):
    """Decode image bytes; returns (RGB image, had_alpha).

    The declared size is checked before decoding: more than `max_pixels` is refused, and with `expect`
    a different size is refused too (raised as SizeMismatch) without decoding a pixel.
    """
    try:
        with warnings.catch_warnings():  # Pillow warns from 89M pixels; bespoke's own limit below is lower
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise InputError(f"declares more pixels than the {_pixels(max_pixels)} bespoke reads (a decompression "
                         "bomb?)", shown, "replace it with the real image") from None
    except Exception as e:  # noqa: BLE001  (any decoder error on hostile bytes is the same answer)
        what = "is not an image" if type(e).__name__ == "UnidentifiedImageError" else "is an unreadable image"
        raise InputError(what, shown, "replace it with a valid PNG") from None
    with im:
        w, h = im.size
        if w <= 0 or h <= 0 or w * h > max_pixels:
            raise InputError(f"declares {w}x{h} pixels, more than the {_pixels(max_pixels)} bespoke reads "
                             "(a decompression bomb?)", shown, "replace it with the real image")
        if expect is not None and (w, h) != tuple(expect):
            raise SizeMismatch((w, h))
        try:
            im.load()
            return to_rgb(im, shown)
        except InputError:
            raise
        except Exception:  # noqa: BLE001
            raise InputError("is a truncated or corrupt image", shown, "replace it with a valid PNG") from None


def _pixels(n: int) -> str:
    side = int(n**0.5)
    return f"{side}x{side}" if side * side == n else f"{n} pixels"


class SizeMismatch(Exception):
    def __init__(self, size: tuple[int, int]):
        self.size = size
        super().__init__(f"{size[0]}x{size[1]}")


def load_image(path: Path | str, max_pixels: int = MAX_PIXELS, expect=None):
    """`open_image` on a file read through `read_file`."""
    return open_image(read_file(path, MAX_IMAGE_BYTES), show(path), max_pixels, expect)


_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}


def to_rgb(im: Image.Image, shown: str = "image") -> tuple[Image.Image, bool]:
    """Any mode Pillow opens, as 8-bit RGB; alpha flattened onto the most common opaque border colour."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _wide_grey(im, shown), False
    has_alpha = mode in _ALPHA or (mode == "P" and "transparency" in im.info) or (
        mode in ("L", "RGB", "1") and "transparency" in im.info)
    try:
        if not has_alpha:
            return im.convert("RGB"), False
        rgba = im.convert("RGBA")
    except ValueError:
        raise InputError(f"has the image mode {mode}, which bespoke cannot read", shown,
                         "save it as an 8-bit RGB or RGBA PNG") from None
    return _flatten(rgba), True


def _wide_grey(im: Image.Image, shown: str) -> Image.Image:
    """16-bit and 32-bit grey scaled to 8 bits (Pillow's convert clips them, so 16-bit comes out white)."""
    a = np.asarray(im)
    if im.mode == "F":
        if not np.isfinite(a).all():
            raise InputError("is a float image with NaN or infinite pixels", shown, "save it as an 8-bit PNG")
        top = 1.0 if a.size and a.min() >= 0 and a.max() <= 1.0 else 255.0
    else:
        a = a.astype(np.int64)
        # Pillow writes an 8-bit grey image it converted to "I" as a 16-bit PNG without scaling it: values
        # that all fit in 8 bits are 8-bit values (a true 16-bit sprite that dark would be black anyway).
        top = 255 if a.size and a.max() <= 255 else 65535
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise InputError(f"has {im.mode} pixels outside 0-65535", shown, "save it as an 8-bit or 16-bit PNG")
    grey = np.clip(np.rint(a.astype(np.float64) * 255.0 / top), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _flatten(rgba: Image.Image) -> Image.Image:
    w, h = rgba.size
    px = rgba.load()
    border = [px[x, y] for x in range(w) for y in (0, h - 1)] + [px[x, y] for y in range(h) for x in (0, w - 1)]
    opaque = [p[:3] for p in border if p[3] == 255] or [p[:3] for p in rgba.getdata() if p[3] == 255]
    bg = Counter(opaque).most_common(1)[0][0] if opaque else (255, 255, 255)
    out = Image.new("RGBA", rgba.size, bg + (255,))
    out.alpha_composite(rgba)
    return out.convert("RGB")
