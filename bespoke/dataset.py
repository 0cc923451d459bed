"""The training data: find it, read it (folder or zip), check every rule, and lay it out for kohya.

kohya reads `<train_data_dir>/<repeats>_<concept>/` and nothing else; bespoke owns that folder and
builds it from the user's input, which it never modifies.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import stat
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from bespoke import __version__, tokens
from bespoke.errors import DataError
from bespoke.fsutil import atomic_write_bytes, atomic_write_json
from bespoke.workspace import Workspace

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
CAPTION_EXT = ".txt"
IGNORED_EXTS = {".npz", ".json", ".toml", ".md"}  # kohya caches, our manifest, notes
LAYOUT_DIR = re.compile(r"^(\d+)_(.+)$")
MANIFEST = "manifest.json"
LAYOUT_VERSION = 1


@dataclass(frozen=True)
class Rules:
    size: int = 24
    caption_prefix: str = "pixel art, 24x24"
    triggers: tuple[str, ...] = ("bespoke punk", "bespoke baby")
    expect: int | None = None
    max_colors: int = 32


@dataclass
class Item:
    stem: str
    image_path: str  # as shown to the user
    caption_path: str
    image: Image.Image  # RGB, alpha flattened
    caption: str  # whitespace-normalised
    sha256: str  # of the source image file
    colors: int
    tokens: int | None = None


@dataclass
class Dataset:
    source: str
    items: list[Item]
    warnings: list[str] = field(default_factory=list)
    layout_hint: str | None = None  # the N_name folder of an already laid-out input

    @property
    def hash(self) -> str:
        h = hashlib.sha256()
        for it in sorted(self.items, key=lambda i: i.stem):
            h.update(f"{it.stem}\0{it.sha256}\0{it.caption}\n".encode())
        return h.hexdigest()


# --- finding the input ---------------------------------------------------------------------------

def find_input(workspace: Workspace | Path, data: Path | None) -> Path:
    """The user's data: --data, else $WS/dataset/, a single *.zip in $WS, $WS/runpod_package/training_data/."""
    ws = Workspace.of(workspace)
    _refuse_foreign_training_data(ws)
    if data is not None:
        return Path(data)
    candidates = [ws.dataset]
    zips = ws.zips()
    if len(zips) > 1:
        raise DataError(
            f"found {len(zips)} zip files and no --data",
            ", ".join(str(z) for z in zips),
            "pass --data with the one to train on, or leave a single zip in the workspace",
        )
    candidates += zips + [ws.runpod_data]
    for c in candidates:
        if c.exists():
            return c
    raise DataError(
        "no training data found",
        f"looked in {ws.dataset}, {ws.root}/*.zip, {ws.runpod_data}",
        f"put your images and captions in {ws.dataset}/ (or a zip in {ws.root}), or pass --data PATH",
    )


def _refuse_foreign_training_data(ws: Workspace) -> None:
    """$WS/training_data is bespoke's output; files there that bespoke did not write are the user's."""
    td = ws.training_data
    if not td.is_dir():
        return
    entries = [e for e in td.iterdir() if not e.name.startswith(".")]
    if all(e.is_dir() and (e / MANIFEST).is_file() for e in entries):
        return
    raise DataError(
        "files that bespoke did not write are in the folder it builds",
        str(td),
        f"bespoke lays out {td} itself (the 'No data found' trap); move your images and captions "
        f"to {ws.dataset}/ and run again",
    )


# --- reading: a folder or a zip, as (relative path, display path, bytes) -------------------------

def _skip(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _read_folder(root: Path, problems: list[str]):
    root_real = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for d in list(dirnames):
            p = Path(dirpath, d)
            if p.is_symlink():
                dirnames.remove(d)
                if not _inside(p.resolve(), root_real):
                    problems.append(f"{p}: symlink points outside the data ({p.resolve()}); replace it with the files")
        for name in sorted(filenames):
            p = Path(dirpath, name)
            rel = PurePosixPath(p.relative_to(root).as_posix())
            if _skip(rel.parts):
                continue
            if p.is_symlink() and not _inside(p.resolve(), root_real):
                problems.append(f"{p}: symlink points outside the data ({p.resolve()}); replace it with the file")
                continue
            yield rel, str(p), p.read_bytes


def _read_zip(path: Path, problems: list[str]):
    zf = zipfile.ZipFile(path)
    for info in zf.infolist():
        if info.is_dir():
            continue
        name = info.filename
        rel = PurePosixPath(name)
        shown = f"{path}:{name}"
        if rel.is_absolute() or ".." in rel.parts or re.match(r"^[A-Za-z]:", name):
            problems.append(f"{shown}: zip entry points outside the data; rebuild the zip with relative paths")
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            problems.append(f"{shown}: zip entry is a symlink; zip the files themselves")
            continue
        if _skip(rel.parts):
            continue
        yield rel, shown, (lambda n=name: zf.read(n))


def _inside(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


# --- checking ------------------------------------------------------------------------------------

def load(data: Path, rules: Rules, tok_dir: Path | None = None) -> Dataset:
    """Read and check every file; raise DataError listing every problem, or return the dataset."""
    data = Path(data)
    problems: list[str] = []
    warnings: list[str] = []
    if data.is_file() and data.suffix.lower() == ".zip":
        try:
            entries = list(_read_zip(data, problems))
        except zipfile.BadZipFile:
            raise DataError("not a valid zip file", str(data), "re-create the zip") from None
    elif data.is_dir():
        entries = list(_read_folder(data, problems))
    else:
        raise DataError("data must be a folder or a .zip", str(data), "pass --data with a folder or a .zip")

    images, captions = {}, {}
    for rel, shown, read in entries:
        ext = rel.suffix.lower()
        key = (rel.parent, rel.stem)
        if ext in IMAGE_EXTS:
            images.setdefault(key, []).append((shown, read))
        elif ext == CAPTION_EXT:
            captions[key] = (shown, read)
        elif ext not in IGNORED_EXTS:
            warnings.append(f"{shown}: ignored (not an image or a {CAPTION_EXT} caption)")

    layout_hint = _check_layout_folders(images, data, problems)

    by_stem: dict[str, list[str]] = {}
    for (_parent, stem), files in images.items():
        by_stem.setdefault(stem, []).extend(shown for shown, _ in files)
    for stem, shown in sorted(by_stem.items()):
        if len(shown) > 1:
            problems.append(f"{' and '.join(shown)}: two images named '{stem}'; rename or remove one")

    for key, (shown, _) in sorted(captions.items()):
        if key not in images:
            problems.append(f"{shown}: caption without an image; add the image or remove the caption")

    items: list[Item] = []
    for key, files in sorted(images.items()):
        shown, read = files[0]
        if key not in captions:
            problems.append(f"{shown}: image without a caption; add {key[1]}{CAPTION_EXT} beside it")
            continue
        cap_shown, cap_read = captions[key]
        item = _check_pair(key[1], shown, read, cap_shown, cap_read, rules, problems, warnings)
        if item is not None:
            items.append(item)

    seen: dict[bytes, str] = {}
    for it in items:
        digest = hashlib.sha256(it.image.tobytes()).digest()
        if digest in seen:
            problems.append(f"{seen[digest]} and {it.image_path}: identical pixels; remove one of them")
        else:
            seen[digest] = it.image_path

    n = len(images)
    if rules.expect is not None and n != rules.expect:
        problems.append(f"{data}: {n} images, expected {rules.expect}; add the missing ones or pass --expect {n}")

    if problems:
        raise DataError(
            f"{len(problems)} problem(s) in the training data",
            str(data),
            "fix the files listed above and run again; your files were not changed",
            problems=problems,
        )
    if not items:
        raise DataError("no images found", str(data), "put PNG images with .txt captions there")

    ds = Dataset(str(data), items, warnings, layout_hint)
    if tok_dir is not None:
        _audit_tokens(ds, tok_dir)
    return ds


def _check_layout_folders(images, data: Path, problems: list[str]) -> str | None:
    """An input already in kohya form must have one N_name/ folder; two doubled the data (406 latents)."""
    folders = sorted({str(parent) for parent, _ in images if any(LAYOUT_DIR.match(p) for p in parent.parts)})
    if len(folders) > 1:
        problems.append(
            f"{data}: {len(folders)} repeat folders ({', '.join(folders)}); kohya would train every image "
            "once per folder (the '406 latents' failure); keep one folder"
        )
    return folders[0] if len(folders) == 1 else None


def _check_pair(stem, shown, read, cap_shown, cap_read, rules: Rules, problems, warnings) -> Item | None:
    ok = True
    raw = cap_read()
    try:
        caption = " ".join(raw.decode("utf-8-sig").split())
    except UnicodeDecodeError:
        problems.append(f"{cap_shown}: caption is not UTF-8; re-save it as UTF-8")
        caption, ok = None, False
    if caption is not None:
        if not caption:
            problems.append(f"{cap_shown}: empty caption; write one starting with '{rules.caption_prefix}'")
            ok = False
        else:
            if not caption.startswith(rules.caption_prefix):
                problems.append(f"{cap_shown}: caption does not start with '{rules.caption_prefix}'; add it at the start")
                ok = False
            if not any(t.lower() in caption.lower() for t in rules.triggers):
                problems.append(f"{cap_shown}: caption has no trigger ({' or '.join(rules.triggers)}); add one")
                ok = False

    data = read()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            img, had_alpha = _flatten(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        kind = "not an image" if isinstance(e, UnidentifiedImageError) else "unreadable or corrupt image"
        problems.append(f"{shown}: {kind}; replace it with a valid PNG")
        return None
    if img.size != (rules.size, rules.size):
        problems.append(
            f"{shown}: image is {img.size[0]}x{img.size[1]}, expected {rules.size}x{rules.size}; "
            f"resize it (nearest neighbour) or pass --size"
        )
        ok = False
    if had_alpha:
        warnings.append(f"{shown}: has an alpha channel; flattened onto its most common border colour")
    colors = len(img.getcolors(maxcolors=1 << 16) or [])
    if colors > rules.max_colors:
        warnings.append(f"{shown}: {colors} colours; pixel art usually has at most {rules.max_colors}")
    if not ok:
        return None
    return Item(stem, shown, cap_shown, img, caption, hashlib.sha256(data).hexdigest(), colors)


def _flatten(im: Image.Image) -> tuple[Image.Image, bool]:
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if not has_alpha:
        return im.convert("RGB"), False
    rgba = im.convert("RGBA")
    w, h = rgba.size
    px = rgba.load()
    border = [px[x, y] for x in range(w) for y in (0, h - 1)] + [px[x, y] for y in range(h) for x in (0, w - 1)]
    opaque = [p[:3] for p in border if p[3] == 255] or [p[:3] for p in rgba.getdata() if p[3] == 255]
    bg = Counter(opaque).most_common(1)[0][0] if opaque else (255, 255, 255)
    out = Image.new("RGBA", rgba.size, bg + (255,))
    out.alpha_composite(rgba)
    return out.convert("RGB"), True


def _audit_tokens(ds: Dataset, tok_dir: Path) -> None:
    """kohya keeps max_token_length (75) CLIP tokens and silently drops the rest."""
    try:
        counts = tokens.count([it.caption for it in ds.items], tokens.ensure(tok_dir))
    except Exception as e:  # the audit is advice; never block training on it
        ds.warnings.append(f"could not count caption tokens ({e}); the token audit was skipped")
        return
    for it, n in zip(ds.items, counts, strict=True):
        it.tokens = n
    long = sorted((it for it in ds.items if it.tokens > tokens.MAX_TOKENS), key=lambda i: -i.tokens)
    if long:
        worst = ", ".join(f"{Path(it.caption_path).name} {it.tokens}" for it in long[:5])
        ds.warnings.append(
            f"{len(long)} caption(s) are longer than {tokens.MAX_TOKENS} CLIP tokens (worst: {worst}); kohya "
            "drops the rest silently; --set max_token_length=225 keeps them"
        )


# --- laying out ----------------------------------------------------------------------------------

@dataclass
class Layout:
    folder: Path
    rebuilt: bool
    images: int


def layout_key(ds: Dataset, repeats: int, concept: str, resolution: tuple[int, int], upscale: str,
               rules: Rules | None = None) -> str:
    opts = [LAYOUT_VERSION, ds.hash, repeats, concept, list(resolution), upscale]
    if rules is not None:  # the LoRA's trigger words come from the manifest (bespoke.lorameta)
        opts += [rules.caption_prefix, list(rules.triggers)]
    opts = json.dumps(opts)
    return hashlib.sha256(opts.encode()).hexdigest()


def lay_out(
    ds: Dataset,
    workspace: Workspace | Path,
    repeats: int = 10,
    concept: str = "bespoke_baby",
    resolution: tuple[int, int] = (1024, 1024),
    upscale: str = "nearest",
    rules: Rules | None = None,
) -> Layout:
    """Write $WS/training_data/<repeats>_<concept>/ as its only entry; no work if it is up to date."""
    ws = Workspace.of(workspace)
    target = ws.training_data
    key = layout_key(ds, repeats, concept, resolution, upscale, rules)
    folder = ws.concept_folder(repeats, concept)
    manifest_path = folder / MANIFEST
    if manifest_path.is_file():
        try:
            if json.loads(manifest_path.read_text())["layout_key"] == key:
                return Layout(folder, False, len(ds.items))
        except (ValueError, KeyError):
            pass

    build = ws.build_dir(os.getpid())
    shutil.rmtree(build, ignore_errors=True)
    out = build / folder.name
    out.mkdir(parents=True)
    files = []
    for it in ds.items:
        img = it.image
        if upscale == "nearest" and img.size != resolution:
            img = img.resize(resolution, Image.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        (out / f"{it.stem}.png").write_bytes(buf.getvalue())
        (out / f"{it.stem}{CAPTION_EXT}").write_text(it.caption + "\n", encoding="utf-8")
        files.append({
            "stem": it.stem, "source": it.image_path, "caption_source": it.caption_path, "sha256": it.sha256,
            "caption_tokens": it.tokens, "size": list(it.image.size), "written_size": list(img.size),
            "colors": it.colors,
        })
    atomic_write_json(out / MANIFEST, {
        "tool": "bespoke", "version": __version__, "layout_key": key, "dataset_hash": ds.hash,
        "source": ds.source, "repeats": repeats, "concept": concept, "resolution": list(resolution),
        "upscale": upscale, "images": len(files), "files": files,
        **({"caption_prefix": rules.caption_prefix, "triggers": list(rules.triggers)} if rules else {}),
    })
    old = ws.old_dir(os.getpid())
    if target.exists():
        os.replace(target, old)
    os.replace(build, target)
    shutil.rmtree(old, ignore_errors=True)
    return Layout(target / folder.name, True, len(ds.items))


def read_manifest(workspace: Workspace | Path) -> dict | None:
    for m in sorted(Workspace.of(workspace).training_data.glob(f"*/{MANIFEST}")):
        return json.loads(m.read_text())
    return None


def write_preview(ds: Dataset, path: Path, scale: int = 4, gap: int = 2) -> Path:
    """Every image at `scale`x nearest neighbour in a grid, to eyeball the set."""
    n = len(ds.items)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    tile = max(it.image.size[0] for it in ds.items) * scale
    sheet = Image.new("RGB", (cols * (tile + gap) + gap, rows * (tile + gap) + gap), (32, 32, 32))
    for i, it in enumerate(sorted(ds.items, key=lambda i: i.stem)):
        img = it.image.resize((it.image.size[0] * scale, it.image.size[1] * scale), Image.NEAREST)
        sheet.paste(img, (gap + (i % cols) * (tile + gap), gap + (i // cols) * (tile + gap)))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def summary(ds: Dataset) -> str:
    return f"{len(ds.items)} images with captions from {ds.source}"

