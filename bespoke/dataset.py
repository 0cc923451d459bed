"""The training data: find it, read it (folder or zip), check every rule, and lay it out for kohya.

kohya reads `<train_data_dir>/<repeats>_<concept>/` and nothing else; bespoke owns that folder and
builds it from the user's input, which it never modifies.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

from PIL import Image

from bespoke import __version__, masking, safeio, tokens
from bespoke.errors import DataError, from_os_error
from bespoke.fsutil import atomic_write_bytes, atomic_write_json, read_json_object
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
    if data is not None:
        refuse_overlap(ws, Path(data))
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


def refuse_overlap(ws: Workspace, data: Path) -> None:
    """The data must not hold, or be inside, a folder bespoke replaces: it would write over its own input.
    prepare and run ask before they make the workspace or its lock (which would be written into the data)."""
    shown = data
    data = Path(data).absolute()  # contains() takes a relative path from its own root
    for owned in (ws.training_data.absolute(), ws.output.absolute()):
        inside, holds = Workspace(owned).contains(data), Workspace(data).contains(owned)
        if inside or holds:
            raise DataError(
                f"the data folder {'is inside' if inside else 'holds'} {owned.name}/, which bespoke rebuilds",
                safeio.show(shown), f"keep your images and captions in their own folder, e.g. {safeio.show(ws.dataset)}/")



def check_layout(workspace: Workspace | Path, prepared: bool = True) -> dict | None:
    """The layout check that prepare, check and train all run on the workspace's training_data.

    It is bespoke's output: anything there that bespoke did not write (a loose file, a folder without
    bespoke's manifest, such as a stray 5_other/) is the user's, and refused, naming it. With `prepared`
    (train, check) it must also hold exactly one <repeats>_<concept>/ folder, since kohya trains every
    folder it finds (the notes' doubled 406 latents). Returns that folder's manifest; None when nothing
    is prepared yet."""
    ws = Workspace.of(workspace)
    td = ws.training_data
    if not td.is_dir():
        return None
    entries = sorted(e for e in td.iterdir() if not e.name.startswith("."))
    # a folder with bespoke's manifest, whole or damaged (a folder or a broken link in its place), is bespoke's
    foreign = [e for e in entries if not (e.is_dir() and os.path.lexists(e / MANIFEST))]
    if foreign:
        names = ", ".join(e.name for e in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise DataError(
            f"files that bespoke did not write are in the folder it builds: {names}",
            str(td),
            f"bespoke lays out {td} itself (the 'No data found' trap); move your images and captions "
            f"to {ws.dataset}/ and run again",
        )
    if prepared and len(entries) > 1:
        raise DataError(
            f"{len(entries)} prepared folders ({', '.join(e.name for e in entries)}); kohya would train every one",
            str(td), "run `bespoke prepare`, which keeps exactly one",
        )
    if not entries:
        return None
    manifest = _manifest(entries[0] / MANIFEST)
    if manifest is None:
        if not prepared:  # prepare lays it out again, whole
            return None
        raise DataError("bespoke's manifest is missing, damaged or from another version", str(entries[0] / MANIFEST),
                        "run `bespoke prepare` to lay the data out again")
    written = {f"{f['stem']}{ext}" for f in manifest["files"] for ext in (".png", CAPTION_EXT)}
    if prepared:  # kohya trains every image and caption in the folder: they must be the ones bespoke wrote
        there = {e.name for e in entries[0].iterdir() if _wanted(PurePosixPath(e.name)) and not e.name.startswith(".")}
        for names, what in ((sorted(there - written), "files that bespoke did not write are in"),
                            (sorted(written - there), "files bespoke wrote are missing from")):
            if names:
                shown = ", ".join(safeio.show(n) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                raise DataError(f"{what} the prepared folder: {shown}", str(entries[0]),
                                f"put your images and captions in {ws.dataset}/ and run `bespoke prepare` again")
    return manifest


def _manifest(path: Path) -> dict | None:
    """The manifest prepare wrote, when it has every field the later steps read, each of its type."""
    m = read_json_object(path)
    if m is None:
        return None

    def count(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    ok = (all(isinstance(m.get(k), str) for k in ("layout_key", "dataset_hash", "concept"))
          and count(m.get("repeats")) and count(m.get("images"))
          and isinstance(m.get("resolution"), list) and len(m["resolution"]) == 2 and all(map(count, m["resolution"]))
          and isinstance(m.get("files"), list) and all(isinstance(f, dict) and isinstance(f.get("stem"), str)
                                                        for f in m["files"]))
    return m if ok else None


# --- reading: a folder or a zip, as (relative path, display path, reader) -------------------------
# Every byte goes through bespoke.safeio: regular files only, capped by what is really read.

def _skip(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _limit(rel: PurePosixPath) -> int:
    return safeio.MAX_IMAGE_BYTES if rel.suffix.lower() in IMAGE_EXTS else safeio.MAX_TEXT_BYTES


def _wanted(rel: PurePosixPath) -> bool:
    return rel.suffix.lower() in IMAGE_EXTS or rel.suffix.lower() == CAPTION_EXT


def _real(p: Path) -> Path | None:
    try:
        return Path(os.path.realpath(p, strict=True))
    except (OSError, RuntimeError):
        return None


def _read_folder(root: Path, problems: list[str], warnings: list[str]):
    root_real = root.resolve()

    def walk_error(e: OSError) -> None:
        what, fix = safeio._os_problem(e)
        problems.append(f"{safeio.show(e.filename)}: folder {what}; {fix}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=walk_error):
        for d in list(dirnames):
            p = Path(dirpath, d)
            if p.is_symlink():
                dirnames.remove(d)  # never followed: a loop or a link out of the data
                real = _real(p)
                if real is None or not _inside(real, root_real):
                    problems.append(f"{safeio.show(p)}: symlinked folder points outside the data or loops; "
                                    "replace it with the files")
        for name in sorted(filenames):
            p = Path(dirpath, name)
            rel = PurePosixPath(p.relative_to(root).as_posix())
            if _skip(rel.parts):
                continue
            shown = safeio.show(p)
            if (why := safeio.name_problem(str(rel))) is not None:
                problems.append(f"{shown}: {why}; rename it")
                continue
            if p.is_symlink():
                real = _real(p)
                if real is not None and not _inside(real, root_real):
                    problems.append(f"{shown}: symlink points outside the data ({safeio.show(real)}); "
                                    "replace it with the file")
                    continue
            try:
                safeio.regular_file(p)  # stat only: a FIFO or device is never opened
            except safeio.InputError as e:
                if _wanted(rel):
                    problems.append(e.problem())
                else:
                    warnings.append(f"{shown}: skipped: it {e.what}")
                continue
            yield rel, shown, partial(safeio.read_file, p, _limit(rel))


def _read_zip(path: Path, problems: list[str]):
    zf = zipfile.ZipFile(path)
    infos = zf.infolist()
    if len(infos) > safeio.MAX_ZIP_ENTRIES:
        raise DataError(f"the zip has {len(infos)} entries", safeio.show(path),
                        f"a training set has hundreds; rebuild the zip (at most {safeio.MAX_ZIP_ENTRIES})")
    for info in infos:
        if info.is_dir():
            continue
        name = info.filename
        rel = PurePosixPath(name)
        shown = f"{safeio.show(path)}:{safeio.show(name)}"
        if rel.is_absolute() or ".." in rel.parts or re.match(r"^[A-Za-z]:", name):
            problems.append(f"{shown}: zip entry points outside the data; rebuild the zip with relative paths")
            continue
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            problems.append(f"{shown}: zip entry is a symlink; zip the files themselves")
            continue
        if _skip(rel.parts):
            continue
        if (why := safeio.name_problem(name)) is not None:
            problems.append(f"{shown}: {why}; rename it and rebuild the zip")
            continue
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            problems.append(f"{shown}: zip entry is not a regular file; zip the files themselves")
            continue
        yield rel, shown, partial(safeio.read_zip_entry, zf, info, _limit(rel), shown)


def _inside(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


# --- checking ------------------------------------------------------------------------------------

def load(data: Path, rules: Rules, tok_dir: Path | None = None) -> Dataset:
    """Read and check every file; raise DataError listing every problem, or return the dataset."""
    data = Path(data)
    problems: list[str] = []
    warnings: list[str] = []
    try:
        st = os.stat(data)
    except OSError as e:
        what, fix = safeio._os_problem(e)
        raise DataError(f"the data {what}", safeio.show(data), fix) from None
    if stat.S_ISREG(st.st_mode) and data.suffix.lower() == ".zip":
        try:
            entries = list(_read_zip(data, problems))
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            raise DataError("not a valid zip file", safeio.show(data), "re-create the zip") from None
    elif stat.S_ISDIR(st.st_mode):
        entries = list(_read_folder(data, problems, warnings))
    else:
        raise DataError("data must be a folder or a .zip", safeio.show(data), "pass --data with a folder or a .zip")

    images, captions = {}, {}
    for rel, shown, read in entries:
        ext = rel.suffix.lower()
        key = (rel.parent, rel.stem)
        if ext in IMAGE_EXTS:
            images.setdefault(key, []).append((shown, read))
        elif ext == CAPTION_EXT:
            if key in captions:  # a.txt and a.TXT: which one is meant is a guess
                problems.append(f"{captions[key][0]} and {shown}: two captions for one image; keep one")
                continue
            captions[key] = (shown, read)
        elif ext not in IGNORED_EXTS:
            warnings.append(f"{shown}: ignored (not an image or a {CAPTION_EXT} caption)")

    layout_hint = _check_layout_folders(images, data, problems)

    by_stem: dict[str, list[str]] = {}
    for (_parent, stem), files in images.items():
        by_stem.setdefault(stem.casefold(), []).extend(shown for shown, _ in files)
    for stem, shown in sorted(by_stem.items()):
        if len(shown) > 1:
            problems.append(f"{' and '.join(shown)}: two images named '{stem}' (ignoring case, as the layout "
                            "must on any file system); rename or remove one")

    for key, (shown, _) in sorted(captions.items()):
        if key not in images:
            problems.append(f"{shown}: caption without an image; add the image or remove the caption")

    items: list[Item] = []
    for key, files in sorted(images.items()):
        shown, read = files[0]
        if key not in captions:
            problems.append(f"{shown}: image without a caption; add {safeio.show(key[1])}{CAPTION_EXT} beside it")
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
        problems.append(f"{safeio.show(data)}: {n} images, expected {rules.expect}; add the missing ones or "
                        f"pass --expect {n}")

    if problems:
        raise DataError(
            f"{len(problems)} problem(s) in the training data",
            safeio.show(data),
            "fix the files listed above and run again; your files were not changed",
            problems=problems,
        )
    if not items:
        raise DataError("no images found", safeio.show(data), "put PNG images with .txt captions there")

    ds = Dataset(str(data), items, warnings, layout_hint)
    if tok_dir is not None:
        _audit_tokens(ds, tok_dir)
    return ds


def _check_layout_folders(images, data: Path, problems: list[str]) -> str | None:
    """An input already in kohya form must have one N_name/ folder; two doubled the data (406 latents)."""
    folders = sorted({str(parent) for parent, _ in images if any(LAYOUT_DIR.match(p) for p in parent.parts)})
    if len(folders) > 1:
        problems.append(
            f"{safeio.show(data)}: {len(folders)} repeat folders ({', '.join(map(safeio.show, folders))}); kohya "
            "would train every image once per folder (the '406 latents' failure); keep one folder"
        )
    return folders[0] if len(folders) == 1 else None


def _check_pair(stem, shown, read, cap_shown, cap_read, rules: Rules, problems, warnings) -> Item | None:
    ok = True
    caption = None
    try:
        raw = cap_read()
    except safeio.InputError as e:
        problems.append(e.problem())
        raw, ok = None, False
    if raw is not None:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            problems.append(f"{cap_shown}: caption is not UTF-8; re-save it as UTF-8")
            text, ok = None, False
        if text is not None and (bad := safeio.text_problem(text)) is not None:
            problems.append(f"{cap_shown}: caption {bad}; remove it (re-save the caption as plain text)")
            text, ok = None, False
        caption = " ".join(text.split()) if text is not None else None
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

    try:
        data = read()
        img, had_alpha = safeio.open_image(data, shown, expect=(rules.size, rules.size))
    except safeio.SizeMismatch as e:
        problems.append(
            f"{shown}: image is {e.size[0]}x{e.size[1]}, expected {rules.size}x{rules.size}; "
            f"resize it (nearest neighbour) or pass --size"
        )
        return None
    except safeio.InputError as e:
        problems.append(e.problem())
        return None
    if had_alpha:
        warnings.append(f"{shown}: has an alpha channel; flattened onto its most common border colour")
    colors = len(img.getcolors(maxcolors=1 << 16) or [])
    if colors > rules.max_colors:
        warnings.append(f"{shown}: {colors} colours; pixel art usually has at most {rules.max_colors}")
    if not ok:
        return None
    return Item(stem, shown, cap_shown, img, caption, hashlib.sha256(data).hexdigest(), colors)


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
        worst = ", ".join(f"{safeio.show(Path(it.caption_path).name)} {it.tokens}" for it in long[:5])
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


CONCEPT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,99}$")
MAX_REPEATS = 10_000
MIN_RESOLUTION, MAX_RESOLUTION = 64, 8192


def option_problems(repeats, concept, resolution, size: int = 24) -> list[tuple[str, str]]:
    """Why the layout options cannot build `<repeats>_<concept>/` inside the workspace: (what, fix) pairs."""
    out = []
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
        out.append((f"--repeats {safeio.show(repeats)} is not a whole number from 1 to {MAX_REPEATS}",
                    "pass --repeats 10 (times each image is seen per epoch)"))
    if isinstance(concept, str) and masking.looks_secret(concept):  # it would name a folder, and be printed
        out.append(("--concept *** looks like a credential", "pass the concept's name (e.g. --concept bespoke_baby)"))
    elif not isinstance(concept, str) or not CONCEPT.match(concept) or concept.strip(".") == "":
        out.append((f"--concept {safeio.show(concept)} is not a plain folder name",
                    "use letters, digits, space, '.', '_', '+' or '-', no '/' (e.g. --concept bespoke_baby)"))
    try:
        w, h = (int(v) for v in resolution)
        ok = all(MIN_RESOLUTION <= v <= MAX_RESOLUTION for v in (w, h))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        out.append((f"resolution {safeio.show(resolution)} is not W,H from {MIN_RESOLUTION} to {MAX_RESOLUTION}",
                    "pass --resolution 1024,1024"))
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1024:
        out.append((f"--size {safeio.show(size)} is not from 1 to 1024", "pass --size 24"))
    return out


def check_options(repeats, concept, resolution, size: int = 24) -> None:
    """Raise a DataError naming every bad layout option (see option_problems)."""
    problems = option_problems(repeats, concept, resolution, size)
    if len(problems) == 1:
        raise DataError(problems[0][0], "bespoke prepare", problems[0][1])
    if problems:
        raise DataError(f"{len(problems)} bad layout options", "bespoke prepare", "fix the options listed above",
                        problems=[f"{what}; {fix}" for what, fix in problems])


def lay_out(
    ds: Dataset,
    workspace: Workspace | Path,
    repeats: int = 10,
    concept: str = "bespoke_baby",
    resolution: tuple[int, int] = (1024, 1024),
    upscale: str = "nearest",
    rules: Rules | None = None,
) -> Layout:
    """Write $WS/training_data/<repeats>_<concept>/ as its only entry; no work if it is up to date.

    It is built whole in a side folder and swapped in, so the previous layout survives any failure
    (a full disk, a kill -9); side folders that dead processes left are removed first.
    """
    check_options(repeats, concept, resolution)
    ws = Workspace.of(workspace)
    target = ws.training_data
    key = layout_key(ds, repeats, concept, resolution, upscale, rules)
    folder = ws.concept_folder(repeats, concept)
    if folder.parent != target or not ws.contains(folder.absolute()):  # check_options makes this so; never write outside
        raise DataError(f"the layout folder {safeio.show(folder)} is not inside {safeio.show(target)}",
                        "bespoke prepare", "use a plain --concept and a number for --repeats")
    manifest_path = folder / MANIFEST
    only = [e.name for e in target.iterdir() if not e.name.startswith(".")] == [folder.name] if target.is_dir() else False
    if only and manifest_path.is_file():
        try:  # the same layout, and its files the ones bespoke wrote: else lay it out again
            if (check_layout(ws) or {}).get("layout_key") == key:
                return Layout(folder, False, len(ds.items))
        except DataError:
            pass

    remove_dead_builds(ws)
    # Encode everything first: the bytes needed are then known before one is written.
    files, blobs = [], []
    for it in ds.items:
        img = it.image
        if upscale == "nearest" and img.size != tuple(resolution):
            img = img.resize(tuple(resolution), Image.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        blobs.append((f"{it.stem}.png", buf.getvalue()))
        blobs.append((f"{it.stem}{CAPTION_EXT}", (it.caption + "\n").encode("utf-8")))
        files.append({
            "stem": it.stem, "source": it.image_path, "caption_source": it.caption_path, "sha256": it.sha256,
            "caption_tokens": it.tokens, "size": list(it.image.size), "written_size": list(img.size),
            "colors": it.colors,
        })
    manifest = {
        "tool": "bespoke", "version": __version__, "layout_key": key, "dataset_hash": ds.hash,
        "source": ds.source, "repeats": repeats, "concept": concept, "resolution": list(resolution),
        "upscale": upscale, "images": len(files), "files": files,
        **({"caption_prefix": rules.caption_prefix, "triggers": list(rules.triggers)} if rules else {}),
    }
    block = 4096  # a file takes whole blocks; the manifest and the folders take a few more
    need = sum(-(-len(b) // block) * block for _, b in blobs) + block * (len(blobs) // 8 + 8)
    build = ws.build_dir(os.getpid())
    try:
        ws.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(ws.root).free
        if free < need:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        shutil.rmtree(build, ignore_errors=True)
        out = build / folder.name
        out.mkdir(parents=True)
        for name, data in blobs:
            (out / name).write_bytes(data)
        atomic_write_json(out / MANIFEST, manifest)
        _swap(build, target, ws)
    except OSError as e:
        shutil.rmtree(build, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(ws.root).free if ws.root.is_dir() else 0
            what = f"not enough disk to lay out the data: needs {_mb(need)}, {_mb(free)} free"
            if free >= need:
                what += ", yet the disk refused new files: it is out of inodes (too many files) or over a quota"
            raise DataError(what, safeio.show(ws.root), "free some space on the volume (or use a larger one) and "
                            "run again; the previous layout is unchanged") from None
        if worded := from_os_error(e):  # written, not read: a write's wording and fix
            raise DataError(f"could not write the layout: {worded.what}", worded.where or safeio.show(target),
                            worded.fix) from None
        what, fix = safeio._os_problem(e)
        raise DataError(f"could not write the layout: {safeio.show(e.filename or build)} {what}",
                        safeio.show(target), fix) from None
    return Layout(target / folder.name, True, len(ds.items))


def _swap(build: Path, target: Path, ws: Workspace) -> None:
    old = ws.old_dir(os.getpid())
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(build, target)
    except OSError:
        if old.exists() and not target.exists():
            os.replace(old, target)  # put the previous layout back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_builds(workspace: Workspace | Path) -> list[Path]:
    """Remove the side folders that a killed (or full-disk) prepare left; a live process's are kept.

    An old-layout folder is a previous layout mid-swap: it is put back when the layout is missing."""
    ws = Workspace.of(workspace)
    removed = []
    for side in (ws.build_dir, ws.old_dir):
        prefix = side(0).name[:-1]  # the folder's name for pid 0, less the 0
        for p in sorted(ws.root.glob(f"{prefix}*")):
            pid = p.name[len(prefix):]
            if not pid.isdigit() or (_alive(int(pid)) and int(pid) != os.getpid()):
                continue
            if side == ws.old_dir and not ws.training_data.exists():
                os.replace(p, ws.training_data)
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def read_manifest(workspace: Workspace | Path) -> dict | None:
    """The prepared layout's manifest, after the layout check (check_layout); None when nothing is prepared."""
    return check_layout(workspace)


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

