"""What the LoRA file says about itself: modelspec metadata flags for sd-scripts, and bespoke's own keys
merged into a finished file's header.

A .safetensors file is an 8-byte little-endian header length, a JSON header (tensor offsets are
relative to the end of it, so a new header leaves them valid), then the tensor bytes. Merging writes a
new header and copies the tensor bytes unchanged into a temporary file beside the original, then
replaces it: the file is whole or untouched, and no tensor is decoded.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

from PIL import Image

from bespoke.errors import BespokeError

# The keys sd-scripts writes from the metadata_* flags (library/sai_model_spec.py at the pin).
TITLE, TRIGGER, USAGE, DESCRIPTION, THUMBNAIL = (
    "modelspec.title", "modelspec.trigger_phrase", "modelspec.usage_hint", "modelspec.description",
    "modelspec.thumbnail")
# bespoke's own keys in best.safetensors.
RECOMMENDED_EPOCH, SCORE, PIXEL_ART, REASON = (
    "bespoke.recommended_epoch", "bespoke.mean_score", "bespoke.pixel_art", "bespoke.reason")
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit
THUMB_PX = 256


def modelspec_flags(*, title: str, triggers: tuple[str, ...], caption_prefix: str, sample_prompt: str,
                    dataset_hash: str, images: int, profile: str) -> dict[str, str]:
    """sd-scripts' metadata_* arguments: what ComfyUI's trigger nodes and Civitai read from the file."""
    return {
        "metadata_title": title,
        "metadata_trigger_phrase": ", ".join(triggers),
        "metadata_usage_hint": f"start the prompt with {caption_prefix}, then a trigger "
                               f"({' or '.join(triggers)}); e.g. {caption_prefix}, {sample_prompt}",
        "metadata_description": f"bespoke SDXL LoRA for {caption_prefix} portraits; dataset sha256 "
                                f"{dataset_hash[:16]}, {images} images; recipe profile {profile}",
    }


def read_header(path: Path) -> tuple[dict, int]:
    """The JSON header and the offset where the tensor bytes start."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise BespokeError("not a safetensors file (too short)", str(path), "pass a .safetensors LoRA")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or n > path.stat().st_size - 8:
            raise BespokeError("not a safetensors file (header length out of range)", str(path),
                               "pass a .safetensors LoRA")
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError):
            header = None
        if not isinstance(header, dict):
            raise BespokeError("not a safetensors file (header is not a JSON object)", str(path),
                               "pass a .safetensors LoRA")
    return header, 8 + n


def metadata(path: Path) -> dict[str, str]:
    return dict(read_header(path)[0].get("__metadata__") or {})


def merge_metadata(path: Path, updates: dict[str, str]) -> None:
    """Add or replace string entries of the header's __metadata__, leaving the tensor bytes as they are."""
    path = Path(path)
    header, start = read_header(path)
    meta = dict(header.get("__metadata__") or {})
    meta.update({k: str(v) for k, v in updates.items()})
    header = {"__metadata__": meta, **{k: v for k, v in header.items() if k != "__metadata__"}}
    blob = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    blob += b" " * (-len(blob) % 8)  # safetensors pads the header to 8 bytes, keeping tensors aligned
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, os.stat(path).st_mode & 0o777)
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            out.write(struct.pack("<Q", len(blob)))
            out.write(blob)
            src.seek(start)
            shutil.copyfileobj(src, out, 16 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e  # the file the user knows, not the temporary one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def thumbnail(image: Path, px: int = THUMB_PX) -> str:
    """A small JPEG of `image` as a data URL, modelspec's thumbnail format."""
    img = Image.open(image).convert("RGB")
    img.thumbnail((px, px), Image.NEAREST)  # pixel art: keep the cells sharp
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def best_keys(epoch: int, mean_score: float, pixel_art: str, reason: str, sample: Path | None) -> dict[str, str]:
    """What best.safetensors carries beyond sd-scripts' own keys."""
    keys = {RECOMMENDED_EPOCH: str(epoch), SCORE: f"{mean_score:.4f}", PIXEL_ART: pixel_art, REASON: reason}
    if sample is not None and Path(sample).is_file():
        keys[THUMBNAIL] = thumbnail(sample)
    return keys
