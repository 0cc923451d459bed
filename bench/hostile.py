"""A corpus of hostile but realistic inputs, run against the real CLI; prints case | outcome | pass/fail.

    .venv/bin/python bench/hostile.py            # the whole corpus, the table on stdout
    .venv/bin/python bench/hostile.py fifo zip   # only the cases whose name has one of these words

Each case builds its own folder (user inputs beside a workspace), runs `python -m bespoke ...` (or
`python -m entrypoint`) as a subprocess with a timeout, and asserts:
- the exit code (1 for a refusal; 0 where success is the documented answer, 2 for click's usage errors);
- a refusal says what is wrong in one line that names the file or value (escaped) and how to fix it;
- no traceback;
- every input is byte-identical afterwards, and nothing appeared outside the workspace (and --out);
- no secret (HF_TOKEN from the environment, a token given as an argument) in the output or any file.
No GPU, no network, the core environment (no torch). tests/test_hostile.py runs it in CI.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ENV_TOKEN = "hf_" + "EnvTokenQ7" * 4  # HF_TOKEN in every case's environment
ARG_TOKEN = "hf_" + "ArgTokenZ3" * 4  # given on the command line by the cases that pass one
SECRETS = (ENV_TOKEN, ARG_TOKEN, "wandbKeyW1" * 4)
TIMEOUT = 60


@dataclass
class Case:
    name: str
    build: object  # (Sandbox) -> list[str]: the argv after `python -m bespoke`
    code: int = 1
    needles: tuple[str, ...] = ()  # each must appear in the output (stderr + stdout)
    module: str = "bespoke"
    env: dict = field(default_factory=dict)
    out: str | None = None  # a folder outside the workspace the command may write (pixelate --out)
    extra: object = None  # (Sandbox, stdout+stderr) -> str | None: a further check; None when it holds
    as_nobody: bool = False  # run without root's power to read any file (root reads chmod 000 files)


@dataclass
class Sandbox:
    root: Path

    @property
    def ws(self) -> Path:
        return self.root / "deep" / "ws"  # two levels down: ../../X from $WS/output still lands in root

    @property
    def data(self) -> Path:
        return self.root / "in" / "data"


@dataclass
class Result:
    case: str
    outcome: str
    failures: list[str]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failures


# --- building blocks -----------------------------------------------------------------------------

def sprite(seed: int, size: int = 24) -> Image.Image:
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    cells = rng.integers(0, 6, (size // 4, size // 4))
    return Image.fromarray(palette[np.kron(cells, np.ones((4, 4), dtype=int))])


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def caption(i: int = 0) -> bytes:
    return f"pixel art, 24x24, portrait of bespoke punk number {i}, green background".encode()


def good_set(folder: Path, n: int = 3, names=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, stem in enumerate(names or [f"p{i:03d}" for i in range(n)]):
        (folder / f"{stem}.png").write_bytes(png(sprite(i)))
        (folder / f"{stem}.txt").write_bytes(caption(i))


def png_header(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels and holds almost nothing (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def grey16(size: int = 24) -> bytes:
    levels = np.array([0, 4000, 20000, 40000, 65535], dtype=np.uint16)
    a = levels[np.arange(size * size).reshape(size, size) // 7 % len(levels)]
    return png(Image.fromarray(a))


def zip_of(path: Path, entries: list[tuple], compress=zipfile.ZIP_DEFLATED) -> None:
    """entries: (name, bytes) or (ZipInfo, bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compress) as zf:
        for name, data in entries:
            zf.writestr(name, data)


def info(name: str, mode: int) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name)
    zi.external_attr = mode << 16
    zi.compress_type = zipfile.ZIP_DEFLATED
    return zi


def good_entries(n: int = 3) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        out += [(f"p{i:03d}.png", png(sprite(i))), (f"p{i:03d}.txt", caption(i))]
    return out


def prepare(s: Sandbox, *extra: str) -> list[str]:
    return ["prepare", "--workspace", str(s.ws), "--data", str(s.data), *extra]


def check(s: Sandbox, *sets: str) -> list[str]:
    good_set(s.data)
    return ["check", "--workspace", str(s.ws), "--data", str(s.data), *[a for v in sets for a in ("--set", v)]]


def dry(s: Sandbox, *sets: str) -> list[str]:
    return ["train", "--workspace", str(s.ws), "--dry-run", *[a for v in sets for a in ("--set", v)]]


def with_set(s: Sandbox, then, *files: tuple[str, bytes]) -> list[str]:
    good_set(s.data)
    for name, data in files:
        p = s.data / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return then(s)


def laid_out_colours(s: Sandbox, stem: str, at_least: int) -> str | None:
    files = list((s.ws / "training_data").glob(f"*/{stem}.png"))
    if not files:
        return f"{stem}.png was not laid out"
    n = len(Image.open(files[0]).convert("RGB").getcolors(1 << 16) or [])
    return None if n >= at_least else f"{stem}.png laid out with {n} colours, the source has {at_least}"


# --- the corpus ----------------------------------------------------------------------------------

def _fifo(s: Sandbox, name: str) -> list[str]:
    good_set(s.data)
    (s.data / name).unlink(missing_ok=True)
    os.mkfifo(s.data / name)
    return prepare(s)


def _socket(s: Sandbox) -> list[str]:
    good_set(s.data)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(s.data / "s.png"))
    sock.close()  # the socket file stays
    (s.data / "s.txt").write_bytes(caption(9))
    return prepare(s)


def _link(s: Sandbox, name: str, target: str) -> list[str]:
    good_set(s.data)
    os.symlink(target, s.data / name)
    return prepare(s)


def _bytes_name(s: Sandbox, stem: bytes) -> list[str]:
    good_set(s.data)
    d = os.fsencode(s.data)
    with open(d + b"/" + stem + b".png", "wb") as f:
        f.write(png(sprite(7)))
    with open(d + b"/" + stem + b".txt", "wb") as f:
        f.write(caption(7))
    return prepare(s)


def _unreadable(s: Sandbox) -> list[str]:
    good_set(s.data)
    (s.data / "p001.png").chmod(0)
    os.chmod(s.root, 0o777)
    for p in s.root.rglob("*"):
        if p.is_dir():
            p.chmod(0o777)
    s.ws.mkdir(parents=True, exist_ok=True)
    s.ws.chmod(0o777)
    return prepare(s)


def _zip(s: Sandbox, entries, *extra) -> list[str]:
    z = s.root / "in" / "data.zip"
    zip_of(z, entries)
    return ["prepare", "--workspace", str(s.ws), "--data", str(z), *extra]


def _zip_lying(s: Sandbox) -> list[str]:
    """The central directory says 10 bytes; the entry inflates to 10 MB."""
    z = s.root / "in" / "data.zip"
    zip_of(z, [*good_entries()[:-1], ("p002.txt", b"\0" * 10_000_000)])
    raw = bytearray(z.read_bytes())
    cd = raw.rfind(b"PK\x01\x02")  # the last entry's central directory record: its sizes say 10 bytes
    struct.pack_into("<I", raw, cd + 24, 10)
    lh = raw.rfind(b"PK\x03\x04")
    struct.pack_into("<I", raw, lh + 22, 10)
    z.write_bytes(bytes(raw))
    return ["prepare", "--workspace", str(s.ws), "--data", str(z)]


def _zip_encrypted(s: Sandbox) -> list[str]:
    """The last entry flagged as encrypted (general purpose bit 0), as a password-protected zip has it."""
    z = s.root / "in" / "data.zip"
    zip_of(z, good_entries())
    raw = bytearray(z.read_bytes())
    for sig, off in ((b"PK\x01\x02", 8), (b"PK\x03\x04", 6)):
        pos = raw.rfind(sig)
        raw[pos + off] |= 1
    z.write_bytes(bytes(raw))
    return ["prepare", "--workspace", str(s.ws), "--data", str(z)]


def _zip_method(s: Sandbox) -> list[str]:
    z = s.root / "in" / "data.zip"
    zip_of(z, good_entries())
    raw = bytearray(z.read_bytes())
    for sig, off in ((b"PK\x01\x02", 10), (b"PK\x03\x04", 8)):
        pos = raw.rfind(sig)
        struct.pack_into("<H", raw, pos + off, 99)  # a compression method nobody has
    z.write_bytes(bytes(raw))
    return ["prepare", "--workspace", str(s.ws), "--data", str(z)]


def _render(s: Sandbox, name: str, data: bytes) -> Path:
    p = s.root / "in" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _upscaled(seed: int) -> bytes:
    return png(sprite(seed).resize((192, 192), Image.NEAREST))


def _pixelate_same_folder(s: Sandbox) -> list[str]:
    p = _render(s, "a.png", _upscaled(1))
    return ["pixelate", str(p), "--out", str(p.parent)]


def _pixelate_same_stem(s: Sandbox) -> list[str]:
    a = _render(s, "x/a.png", _upscaled(1))
    b = _render(s, "y/a.png", _upscaled(2))
    return ["pixelate", str(a), str(b), "--out", str(s.root / "sprites")]


def _two_sprites(s: Sandbox, _out: str) -> str | None:
    got = sorted(p.name for p in (s.root / "sprites").iterdir())
    if got != ["a-2.png", "a.png"]:
        return f"expected a.png and a-2.png, got {got}"
    a, b = (np.asarray(Image.open(s.root / "sprites" / n)) for n in got)
    return None if not np.array_equal(a, b) else "the two sprites are the same image"


def _evaluate(s: Sandbox, name: str, data: bytes | None) -> list[str]:
    sample = s.ws / "output" / "sample"
    sample.mkdir(parents=True)
    good = sprite(1).resize((96, 96), Image.NEAREST)
    (sample / "bespoke_baby_sdxl_e000001_00_20250101000000_1234.png").write_bytes(png(good))
    target = sample / name
    if data is None:
        os.mkfifo(target)
    else:
        target.write_bytes(data)
    return ["evaluate", "--workspace", str(s.ws)]


def _cmyk(s: Sandbox) -> list[str]:
    good_set(s.data)
    buf = io.BytesIO()
    sprite(7).convert("CMYK").save(buf, format="JPEG", quality=100)  # print-shop JPEGs are CMYK
    (s.data / "c.jpg").write_bytes(buf.getvalue())
    (s.data / "c.txt").write_bytes(caption(7))
    return prepare(s)


def _alpha(s: Sandbox) -> list[str]:
    """An RGBA sprite with alpha saved as a PNG opens as RGBA: laid out (flattened) with a warning."""
    good_set(s.data)
    img = sprite(10).convert("RGBA")
    img.putpixel((0, 0), (0, 0, 0, 0))
    (s.data / "la.png").write_bytes(png(img))
    (s.data / "la.txt").write_bytes(caption(10))
    return prepare(s)


CASES: list[Case] = [
    # --- 4. special files, loops, unreadable files, odd names -------------------------------------
    Case("fifo named as an image", lambda s: _fifo(s, "x.png"), needles=("x.png", "FIFO")),
    Case("fifo named as a caption", lambda s: _fifo(s, "p001.txt"), needles=("p001.txt", "FIFO")),
    Case("fifo of another kind is skipped", lambda s: _fifo(s, "notes"), code=0, needles=("notes", "skipped")),
    Case("socket named as an image", _socket, needles=("s.png", "socket")),
    Case("symlink loop", lambda s: _link(s, "loop.png", "loop.png"), needles=("loop.png", "symlink loop")),
    Case("broken symlink", lambda s: _link(s, "gone.png", "nowhere.png"), needles=("gone.png", "broken symlink")),
    Case("symlink out of the data", lambda s: _link(s, "x.png", "/etc/passwd"), needles=("x.png", "outside")),
    Case("symlink to a device", lambda s: _link(s, "z.png", "/dev/zero"), needles=("z.png",)),
    Case("symlinked folder loop is not followed", lambda s: _link(s, "again", "."), code=0),
    Case("symlinked folder out of the data", lambda s: _link(s, "etc", "/etc"), needles=("etc", "outside")),
    Case("folder named like an image is a folder", lambda s: with_set(s, prepare, ("d.png/x", b"")), code=0,
         needles=("d.png/x", "ignored")),
    Case("unreadable image", _unreadable, needles=("p001.png", "permission denied"), as_nobody=True),
    Case("non-UTF-8 file name", lambda s: _bytes_name(s, b"bad\xff\xfe"), needles=("bad\\xff\\xfe.png", "UTF-8")),
    Case("newline in a file name", lambda s: _bytes_name(s, b"two\nlines"), needles=("two\\nlines.png",)),
    Case("terminal escape in a file name", lambda s: _bytes_name(s, b"\x1b[31mred"), needles=("\\x1b[31mred",)),
    Case("bidi override in a file name", lambda s: _bytes_name(s, "\u202egnp.exe".encode()), needles=("\\u202e",)),
    Case("empty data folder", lambda s: (s.data.mkdir(parents=True), prepare(s))[1], needles=("no images",)),
    # --- 4. bombs and broken images -----------------------------------------------------------------
    Case("png declaring 20000x20000", lambda s: with_set(s, prepare, ("b.png", png_header(20000, 20000)),
                                                           ("b.txt", caption(5))), needles=("b.png", "bomb")),
    Case("png declaring 9000x9000", lambda s: with_set(s, prepare, ("b.png", png_header(9000, 9000)),
                                                         ("b.txt", caption(5))), needles=("b.png", "9000x9000")),
    Case("png declaring 24x24 with no pixels", lambda s: with_set(s, prepare, ("b.png", png_header(24, 24)),
                                                                    ("b.txt", caption(5))), needles=("b.png",)),
    Case("truncated png", lambda s: with_set(s, prepare, ("t.png", png(sprite(4))[:60]), ("t.txt", caption(4))),
         needles=("t.png", "corrupt")),
    Case("empty png", lambda s: with_set(s, prepare, ("e.png", b""), ("e.txt", caption(4))),
         needles=("e.png", "not an image")),
    Case("text named .png", lambda s: with_set(s, prepare, ("n.png", b"hello"), ("n.txt", caption(4))),
         needles=("n.png", "not an image")),
    Case("huge sparse image file", lambda s: (with_set(s, lambda s: None), os.truncate(_render(s, "data/h.png", b""),
                                              70 << 20), (s.data / "h.txt").write_bytes(caption(3)), prepare(s))[-1],
         needles=("h.png", "larger than")),
    Case("huge caption", lambda s: with_set(s, prepare, ("p000.txt", caption(0) + b" x" * 600_000)),
         needles=("p000.txt", "larger than")),
    Case("wrong size is refused before decoding", lambda s: with_set(s, prepare, ("w.png", png(sprite(3, 32))),
                                                                    ("w.txt", caption(3))), needles=("w.png", "32x32")),
    # --- 5. modes and captions ----------------------------------------------------------------------
    Case("16-bit grey sprite keeps its greys", lambda s: with_set(s, prepare, ("g.png", grey16()), ("g.txt", caption(8))),
         code=0, extra=lambda s, o: laid_out_colours(s, "g", 5)),
    Case("palette sprite with transparency", lambda s: with_set(
        s, prepare, ("t.png", png(sprite(6).convert("P", palette=Image.Palette.ADAPTIVE, colors=6))),
        ("t.txt", caption(6))), code=0, extra=lambda s, o: laid_out_colours(s, "t", 6)),
    Case("CMYK JPEG sprite keeps its colours", _cmyk, code=0, extra=lambda s, o: laid_out_colours(s, "c", 6)),
    Case("sprite with alpha is flattened, with a warning", _alpha, needles=("la.png", "alpha"), code=0),
    Case("NUL in a caption", lambda s: with_set(s, prepare, ("p001.txt", caption(1) + b"\0x")),
         needles=("p001.txt", "\\x00")),
    Case("terminal escape in a caption", lambda s: with_set(s, prepare, ("p001.txt", caption(1) + b"\x1b[2J")),
         needles=("p001.txt", "\\x1b")),
    Case("bell in a caption", lambda s: with_set(s, prepare, ("p001.txt", caption(1) + b"\x07")),
         needles=("p001.txt", "\\x07")),
    Case("bidi override in a caption", lambda s: with_set(s, prepare, ("p001.txt", caption(1) + "\u202e".encode())),
         needles=("p001.txt", "\\u202e")),
    Case("caption not UTF-8", lambda s: with_set(s, prepare, ("p001.txt", caption(1) + b"\xff\xfe")),
         needles=("p001.txt", "UTF-8")),
    Case("a.txt beside a.TXT", lambda s: with_set(s, prepare, ("p001.TXT", caption(11))),
         needles=("p001.TXT", "two captions")),
    Case("a.png beside A.png", lambda s: with_set(s, prepare, ("P001.png", png(sprite(12))), ("P001.txt", caption(12))),
         needles=("P001.png", "ignoring case")),
    # --- 4. zips ------------------------------------------------------------------------------------
    Case("zip bomb caption", lambda s: _zip(s, [*good_entries(), ("b.png", png(sprite(9))), ("b.txt", b"\0" * 50_000_000)]),
         needles=("b.txt", "inflates")),
    Case("zip bomb image", lambda s: _zip(s, [*good_entries(), ("b.png", b"\0" * 80_000_000), ("b.txt", caption())]),
         needles=("b.png", "inflates")),
    Case("zip with a lying size", _zip_lying, needles=("p002.txt",)),
    Case("zip with an unknown compression", _zip_method, needles=("compression",)),
    Case("zip entry ../x", lambda s: _zip(s, [*good_entries(), ("../x.png", png(sprite(9)))]),
         needles=("../x.png", "outside")),
    Case("zip entry /abs", lambda s: _zip(s, [*good_entries(), ("/etc/x.png", png(sprite(9)))]),
         needles=("/etc/x.png", "outside")),
    Case("zip symlink entry", lambda s: _zip(s, [*good_entries(), (info("l.png", stat.S_IFLNK | 0o777), b"/etc")]),
         needles=("l.png", "symlink")),
    Case("zip fifo entry", lambda s: _zip(s, [*good_entries(), (info("f.png", stat.S_IFIFO | 0o644), b"")]),
         needles=("f.png", "not a regular file")),
    Case("zip encrypted entry", _zip_encrypted, needles=("p002.txt", "password")),
    Case("zip entry with a newline", lambda s: _zip(s, [*good_entries(), ("a\nb.png", png(sprite(9)))]),
         needles=("a\\nb.png",)),
    Case("zip that is not a zip", lambda s: (_render(s, "data.zip", b"PK not really"),
                                             ["prepare", "--workspace", str(s.ws), "--data", str(s.root / "in/data.zip")])[1],
         needles=("data.zip", "not a valid zip")),
    Case("zip with a 16-bit grey sprite", lambda s: _zip(s, [*good_entries(), ("g.png", grey16()), ("g.txt", caption(8))]),
         code=0, extra=lambda s, o: laid_out_colours(s, "g", 5)),
    # --- 3. paths built from options ----------------------------------------------------------------
    Case("--concept a/b", lambda s: with_set(s, lambda s: prepare(s, "--concept", "a/b")), needles=("--concept a/b",)),
    Case("--concept ..", lambda s: with_set(s, lambda s: prepare(s, "--concept", "..")), needles=("--concept ..",)),
    Case("--concept with a newline", lambda s: with_set(s, lambda s: prepare(s, "--concept", "a\nb")),
         needles=("--concept a\\nb",)),
    Case("--repeats -5", lambda s: with_set(s, lambda s: prepare(s, "--repeats", "-5")), needles=("--repeats -5",)),
    Case("--repeats 0", lambda s: with_set(s, lambda s: prepare(s, "--repeats", "0")), needles=("--repeats 0",)),
    Case("--resolution 0,0", lambda s: with_set(s, lambda s: prepare(s, "--resolution", "0,0")), needles=("0, 0",)),
    Case("--resolution abc (usage error)", lambda s: with_set(s, lambda s: prepare(s, "--resolution", "abc")),
         code=2, needles=("--resolution",)),
    Case("--size 0", lambda s: with_set(s, lambda s: prepare(s, "--size", "0")), needles=("--size 0",)),
    Case("--data is the workspace", lambda s: (good_set(s.ws / "dataset"),
                                               ["prepare", "--workspace", str(s.ws), "--data", str(s.ws)])[1],
         needles=("training_data",)),
    Case("--data inside the output", lambda s: (good_set(s.ws / "output" / "mine"),
                                                ["prepare", "--workspace", str(s.ws), "--data",
                                                 str(s.ws / "output" / "mine")])[1], needles=("output",)),
    Case("relative --data beside a relative --workspace", lambda s: (good_set(s.data), [
        "prepare", "--workspace", "deep/ws", "--data", "in/data"])[1], code=0, needles=("layout:",)),
    Case("--set output_name=../../X", lambda s: dry(s, "output_name=../../X"), needles=("output_name",)),
    Case("--set log_prefix=../x", lambda s: dry(s, "log_prefix=../x"), needles=("log_prefix",)),
    Case("--set output_name=/abs", lambda s: check(s, "output_name=/tmp/x"), needles=("output_name",)),
    # --- 6. values that pass the types but break training ---------------------------------------------
    Case("train_batch_size=0", lambda s: check(s, "train_batch_size=0"), needles=("train_batch_size=0", "at least 1")),
    Case("gradient_accumulation_steps=0", lambda s: check(s, "gradient_accumulation_steps=0"),
         needles=("gradient_accumulation_steps=0",)),
    Case("max_train_epochs=-3", lambda s: check(s, "max_train_epochs=-3"), needles=("max_train_epochs=-3",)),
    Case("learning_rate=nan", lambda s: check(s, "learning_rate=nan"), needles=("learning_rate=nan", "finite")),
    Case("learning_rate=inf", lambda s: check(s, "learning_rate=inf"), needles=("learning_rate=inf",)),
    Case("text_encoder_lr=abc", lambda s: check(s, "text_encoder_lr=abc"), needles=("text_encoder_lr=abc",)),
    Case("network_dim=1e3", lambda s: check(s, "network_dim=1e3"), needles=("network_dim=1e3", "integer")),
    Case("unbalanced quote in optimizer_args", lambda s: check(s, "optimizer_args=weight_decay='0.1"),
         needles=("optimizer_args", "quote")),
    Case("--set resolution=0,0", lambda s: check(s, "resolution=0,0"), needles=("resolution",)),
    Case("control byte in a --set value", lambda s: check(s, "seed=1\x1b[2J"), needles=("seed", "\\x1b")),
    Case("unknown flag keeps the data rows", lambda s: check(s, "network_dimm=8"),
         needles=("network_dimm", "3 images with captions", "disk")),
    Case("every bad override at once, data rows kept", lambda s: check(
        s, "train_batch_size=0", "learning_rate=nan", "max_train_epochs=-3", "bogus=1"),
        needles=("train_batch_size=0", "learning_rate=nan", "max_train_epochs=-3", "bogus", "3 images", "disk")),
    Case("train dry-run: batch 0", lambda s: dry(s, "train_batch_size=0"), needles=("train_batch_size=0",)),
    Case("train dry-run: several bad overrides", lambda s: dry(s, "train_batch_size=0", "seed=x"),
         needles=("train_batch_size=0", "seed=x")),
    # --- 2. secrets ---------------------------------------------------------------------------------
    Case("token as a --set value (check)", lambda s: check(s, f"huggingface_token={ARG_TOKEN}")),
    Case("token in an invalid --set value", lambda s: check(s, f"learning_rate={ARG_TOKEN}"),
         needles=("learning_rate=***",)),
    Case("token as an unknown flag", lambda s: check(s, f"my_token={ARG_TOKEN}"), needles=("my_token",)),
    Case("token in a train dry-run", lambda s: dry(s, f"huggingface_token={ARG_TOKEN}", f"wandb_api_key={SECRETS[2]}")),
    Case("token in an override that is not NAME=VALUE", lambda s: check(s, ARG_TOKEN), needles=("NAME=VALUE",)),
    Case("HF_TOKEN through a whole prepare", lambda s: (good_set(s.data), prepare(s))[1], code=0),
    Case("token in BESPOKE_ARGS", lambda s: [], module="entrypoint",
         env={"BESPOKE_ARGS": "--set huggingface_token=${HF_TOKEN} --expect ${NOPE}"}, needles=("$NOPE",)),
    # --- 1. outputs never overwrite inputs ----------------------------------------------------------
    Case("pixelate into the image's own folder", _pixelate_same_folder, needles=("a.png", "write over")),
    Case("pixelate two images with one name", _pixelate_same_stem, code=0, out="sprites", extra=_two_sprites),
    # --- 10. smaller ones ---------------------------------------------------------------------------
    Case("score on a 1x1 image", lambda s: ["score", str(_render(s, "one.png", png(Image.new("RGB", (1, 1)))))],
         needles=("one.png", "1x1")),
    Case("score on a bomb", lambda s: ["score", str(_render(s, "bomb.png", png_header(30000, 30000)))],
         needles=("bomb.png", "bomb")),
    Case("score on a FIFO", lambda s: (os.mkfifo(s.root / "in.png"), ["score", str(s.root / "in.png")])[1],
         needles=("in.png", "FIFO")),
    Case("pixelate a bomb", lambda s: ["pixelate", str(_render(s, "bomb.png", png_header(20000, 20000))),
                                       "--out", str(s.root / "sprites")], needles=("bomb.png", "bomb"), out="sprites"),
    Case("pixelate a 16-bit grey render", lambda s: ["pixelate", str(_render(s, "g.png", grey16(96))),
                                                     "--out", str(s.root / "sprites")], code=0, out="sprites"),
    Case("evaluate with a bomb among the samples", lambda s: _evaluate(
        s, "bespoke_baby_sdxl_e000001_01_20250101000000_1234.png", png_header(20000, 20000)), needles=("bomb",)),
    Case("evaluate with a FIFO among the samples", lambda s: _evaluate(
        s, "bespoke_baby_sdxl_e000001_01_20250101000000_1234.png", None), needles=("FIFO",)),
    Case("evaluate with the palette from its own report", lambda s: [*_evaluate(s, "x.png", b""), "--palette-from",
                                                                      str(_mkdir(s.ws / "output" / "report"))],
         needles=("report", "overlaps")),
    Case("evaluate with a palette folder that loops", lambda s: [*_evaluate(s, "x.png", b""), "--palette-from",
                                                                 str(_looping_palette(s))], code=0),
    Case("BESPOKE_SET quoting in the plain CLI", lambda s: dry(s), env={"BESPOKE_SET": "seed='1 2' network_dim=8"},
         needles=("seed=1 2",)),
    Case("BESPOKE_SET unbalanced quote in the plain CLI", lambda s: dry(s), env={"BESPOKE_SET": "seed='1"},
         needles=("BESPOKE_SET",)),
    Case("BESPOKE_SET token in the plain CLI", lambda s: dry(s, "train_batch_size=0"),
         env={"BESPOKE_SET": f"huggingface_token='{ARG_TOKEN}'"}, needles=("train_batch_size=0",)),
    Case("BESPOKE_ARGS with an unset variable", lambda s: [], module="entrypoint",
         env={"BESPOKE_ARGS": "--expect ${NUM_IMAGES}"}, needles=("$NUM_IMAGES",)),
    Case("BESPOKE_SET with an unbalanced quote", lambda s: [], module="entrypoint",
         env={"BESPOKE_SET": "output_name='x"}, needles=("BESPOKE_SET", "quote")),
    # --- a second round (stop 20): variants a red-team pass found --------------------------------------
    Case("a 310-digit seed", lambda s: dry(s, "seed=" + "1" * 310), needles=("seed=1111", "finite")),
    Case("a 400-digit epoch count in check", lambda s: check(s, "max_train_epochs=" + "9" * 400),
         needles=("max_train_epochs=9999", "finite")),
    Case("prepare into a workspace under a file", lambda s: _under_file(s, "prepare", "--data", str(s.data)),
         needles=("not a folder",)),
    Case("evaluate a workspace under a file", lambda s: _under_file(s, "evaluate"), needles=("not a folder",)),
    Case("demo-data under a file", lambda s: (_mkfile(s.root / "f"), ["demo-data", "--out", str(s.root / "f" / "x")])[1],
         needles=("not a folder",)),
    Case("token after --set, with a space", lambda s: [*dry(s), "--set", "huggingface_token", ARG_TOKEN], code=2),
    Case("wandb key after --set, with a space", lambda s: [*dry(s), "--set", "wandb_api_key", SECRETS[2]], code=2),
    Case("token given as --expect", lambda s: (good_set(s.data), prepare(s, "--expect", ARG_TOKEN))[1], code=2),
    Case("token given as the price per hour", lambda s: (_prepared(s), dry(s))[1],
         env={"BESPOKE_PRICE_PER_HOUR": ARG_TOKEN}, needles=("price per hour",)),
    Case("token given as the concept", lambda s: (good_set(s.data), prepare(s, "--concept", ARG_TOKEN))[1],
         needles=("--concept ***", "credential")),
    Case("token glued to a word in a --set value", lambda s: (_prepared(s), dry(s, f"training_comment=x_{ARG_TOKEN}"))[1],
         code=0, needles=("x_***",)),
    Case("console_log_file outside the workspace", lambda s: dry(s, f"console_log_file={s.root / 'escape.log'}"),
         needles=("console_log_file", "outside the workspace")),
    Case("offload path outside the workspace", lambda s: dry(s, f"offload_param_nvme_path={s.root}"),
         needles=("offload_param_nvme_path",)),
    Case("dataset_config refused with its fix", lambda s: dry(s, "dataset_config=x.toml"), needles=("dataset_config",)),
    Case("prepare a workspace inside the data folder", lambda s: (good_set(s.data), [
        "prepare", "--workspace", str(s.data / "ws"), "--data", str(s.data)])[1], needles=("data folder",)),
    Case("run a workspace inside the data folder", lambda s: (good_set(s.data), [
        "run", "--workspace", str(s.data / "sub" / "ws"), "--data", str(s.data)])[1], needles=("data folder",)),
    Case("demo-data over the user's own files", lambda s: _demo_over(s), needles=("demo_000.txt", "not this demo's")),
    Case("an image added to the prepared folder", lambda s: _touch_prepared(s, add="extra.png"),
         needles=("extra.png", "did not write")),
    Case("a caption taken from the prepared folder", lambda s: _touch_prepared(s, remove="p001.txt"),
         needles=("p001.txt", "missing")),
    Case("evaluate with the report folder linked elsewhere", lambda s: _report_link(s),
         needles=("report", "link out of the output folder")),
    # --- a third round (stop 20): the environment, notifications, odd files in the workspace ----------
    Case("notify URL with a password in it", lambda s: (good_set(s.data), ["run", "--workspace", str(s.ws), "--data",
                                                                            str(s.data)])[1],
         env={"BESPOKE_NOTIFY_URL": "https://bob:s3cretPassW0rd@127.0.0.1:9/"},
         extra=lambda s, out: "the URL's password was printed" if "s3cretPassW0rd" in out else None),
    Case("notify URL of the file scheme", lambda s: (good_set(s.data), ["run", "--workspace", str(s.ws), "--data",
                                                                        str(s.data)])[1],
         env={"BESPOKE_NOTIFY_URL": "file:///etc/passwd"}),
    Case("check with an unknown profile", lambda s: [*check(s), "--profile", "turbo"], needles=("turbo",)),
    Case("check with a misspelt switch", lambda s: check(s), env={"BESPOKE_STOP_ON_PHOTO": "2"},
         needles=("BESPOKE_STOP_ON_PHOTO",)),
    # --- a fourth round (stop 21): damaged state in the workspace, the environment's spaces ----------
    Case("a manifest without its resolution", lambda s: _damaged_manifest(s, '{"files": [], "repeats": 10}'),
         needles=("manifest is missing, damaged",)),
    Case("a manifest nested 100,000 deep", lambda s: _damaged_manifest(s, "[" * 100_000 + "]" * 100_000),
         needles=("manifest is missing, damaged",)),
    Case("the output folder is a file (prepare)", lambda s: _output_file(s), needles=("output folder is a file",)),
    Case("BESPOKE_DATA of spaces (run)", lambda s: ["run", "--workspace", str(s.ws)], env={"BESPOKE_DATA": "   "},
         needles=("no training data found",)),
    Case("a 400-digit BESPOKE_EXPECT", lambda s: (good_set(s.data), prepare(s))[1],
         code=2, env={"BESPOKE_EXPECT": "9" * 400},
         extra=lambda s, out: "a 400-digit number was printed" if "9" * 60 in out else None),
    Case("check with a GPU memory cap that is no number", lambda s: check(s), env={"BESPOKE_GPU_MEMORY_GB": "lots"},
         needles=("BESPOKE_GPU_MEMORY_GB",)),
    Case("check with a 300-digit price per hour", lambda s: [*check(s), "--price-per-hour", "9" * 300],
         needles=("price per hour",), extra=lambda s, out: "a 300-digit number was printed" if "9" * 60 in out else None),
    Case("status.json is a FIFO (evaluate)", lambda s: (os.makedirs(s.ws / "output", exist_ok=True),
                                                        os.mkfifo(s.ws / "output" / "status.json"),
                                                        ["evaluate", "--workspace", str(s.ws)])[2],
         needles=("no samples",)),
    Case("run.json is a FIFO (train dry-run)", lambda s: (_prepared(s), os.makedirs(s.ws / "output", exist_ok=True),
                                                          os.mkfifo(s.ws / "output" / "run.json"), dry(s))[3], code=0),
    Case("a newline in the publish repo", lambda s: ["publish", "--workspace", str(s.ws), "--repo", "me/x\ny"],
         needles=("me/x\\ny",)),
    Case("a workspace path too long (entrypoint)", lambda s: [], module="entrypoint",
         env={"BESPOKE_WORKSPACE": "/tmp/" + "a" * 5000, "BESPOKE_ON_FINISH": "exit", "BESPOKE_TENSORBOARD": "0"},
         needles=("too long",)),
    Case("a junk BESPOKE_HUB_REPO is said before training", lambda s: check(s), env={"BESPOKE_HUB_REPO": "not a repo"},
         needles=("BESPOKE_HUB_REPO", "not a Hub repo id")),
    Case("prepare again after a caption was taken", lambda s: (_touch_prepared(s, remove="p001.txt"), prepare(s))[1],
         code=0, needles=("written",), extra=lambda s, _: None if any(
             (s.ws / "training_data").glob("*/p001.txt")) else "p001.txt was not laid out again"),
]


def _mkfile(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"a file, not a folder\n")
    return p


def _under_file(s: Sandbox, command: str, *extra: str) -> list[str]:
    good_set(s.data)
    return [command, "--workspace", str(_mkfile(s.root / "f") / "ws"), *extra]


def _prepared(s: Sandbox) -> None:
    """A workspace prepared by the real CLI, as a user's earlier `bespoke prepare` leaves it."""
    good_set(s.data)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "bespoke", *prepare(s)], env=env, capture_output=True, check=True,
                   timeout=TIMEOUT)


def _touch_prepared(s: Sandbox, add: str | None = None, remove: str | None = None) -> list[str]:
    _prepared(s)
    (folder,) = (s.ws / "training_data").iterdir()
    if add:
        (folder / add).write_bytes(png(sprite(9)))
    if remove:
        (folder / remove).unlink()
    return dry(s)


def _damaged_manifest(s: Sandbox, text: str) -> list[str]:
    _prepared(s)
    (manifest,) = (s.ws / "training_data").glob("*/manifest.json")
    manifest.write_text(text)
    return dry(s)


def _output_file(s: Sandbox) -> list[str]:
    _prepared(s)
    shutil.rmtree(s.ws / "output")
    (s.ws / "output").write_text("")
    return prepare(s, "--repeats", "4")


def _report_link(s: Sandbox) -> list[str]:
    argv = _evaluate(s, "bespoke_baby_sdxl_e000001_01_20250101000000_1234.png",
                     png(sprite(2).resize((96, 96), Image.NEAREST)))
    mine = _mkdir(s.root / "mine")
    (mine / "report.html").write_text("my own page")
    (s.ws / "output" / "report").symlink_to(mine)
    return argv


def _demo_over(s: Sandbox) -> list[str]:
    (s.data).mkdir(parents=True, exist_ok=True)
    (s.data / "demo_000.txt").write_text("my own caption\n")
    return ["demo-data", "--out", str(s.data), "--count", "3"]


# --- running -------------------------------------------------------------------------------------

def _snapshot(root: Path, skip: list[Path]) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            p = here / name
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest() if st.st_size < (1 << 20) else \
                    f"{st.st_size}:{st.st_mtime_ns}"
            else:
                digest = f"{stat.S_IFMT(st.st_mode)}:{os.readlink(p) if stat.S_ISLNK(st.st_mode) else ''}"
            out[os.fsdecode(p)] = digest
    return out


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _looping_palette(s: Sandbox) -> Path:
    folder = _mkdir(s.root / "in" / "palette")
    (folder / "p.png").write_bytes(png(sprite(1)))
    (folder / "again").symlink_to(".")
    return folder


def _secrets_in_files(root: Path) -> list[str]:
    found = []
    for dirpath, _dirs, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath, name)
            try:
                st = os.lstat(p)
                if not stat.S_ISREG(st.st_mode) or st.st_size > (8 << 20):
                    continue
                data = p.read_bytes()
            except OSError:
                continue
            found += [f"{os.fsdecode(p)} holds a secret" for s in SECRETS if s.encode() in data]
    return found


def _demote():
    """Root reads a chmod 000 file: drop the capabilities that let it (from the bounding set, which an
    exec'd root process gets as its permitted set), so the case sees what a normal user sees."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP


def run_case(case: Case, tokenizer_dir: Path, parent: Path) -> Result:
    root = Path(tempfile.mkdtemp(prefix="case-", dir=parent))
    s = Sandbox(root)
    t0 = time.time()
    try:
        argv = case.build(s)
    except Exception as e:  # noqa: BLE001  (a broken case is a failed case, not a stopped corpus)
        _rmtree(root)
        return Result(case.name, "setup failed", [f"setup: {type(e).__name__}: {e}"], time.time() - t0)
    s.ws.mkdir(parents=True, exist_ok=True)
    out_dir = root / case.out if case.out else None
    before = _snapshot(root, [s.ws] + ([out_dir] if out_dir else []))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root / "home"), "LANG": "C.UTF-8",
           "HF_TOKEN": ENV_TOKEN, "HF_HUB_OFFLINE": "1", "BESPOKE_TOKENIZER_DIR": str(tokenizer_dir),
           "BESPOKE_WORKSPACE": str(s.ws), "PYTHONPATH": str(REPO), "SD_SCRIPTS_DIR": str(root / "no-sd-scripts"),
           "COLUMNS": "200", **case.env}
    demote = case.as_nobody and os.geteuid() == 0
    try:
        proc = subprocess.run([sys.executable, "-m", case.module, *argv], env=env, cwd=root, capture_output=True,
                              timeout=TIMEOUT, preexec_fn=_demote if demote else None)
        code, text = proc.returncode, proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        code = None
        text = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
    failures = []
    if code is None:
        failures.append(f"blocked: no exit within {TIMEOUT} s")
    elif code != case.code:
        failures.append(f"exit {code}, expected {case.code}")
    if "Traceback" in text:
        failures.append("a traceback")
    if case.code == 1 and code == 1 and not any(line.startswith("error: ") and "fix: " in line
                                                 for line in text.splitlines()):
        failures.append("no one-line 'error: ... fix: ...'")
    lines = text.splitlines()
    for needle in case.needles:
        if not any(needle in line for line in lines):
            failures.append(f"no line names {needle!r}")
    after = _snapshot(root, [s.ws] + ([out_dir] if out_dir else []))
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if changed:
        failures.append("changed outside the workspace: " + ", ".join(Path(c).name for c in changed[:3]))
    failures += [f"the output holds a secret ({sec[:6]}...)" for sec in SECRETS if sec in text]
    failures += _secrets_in_files(root)
    if case.extra is not None and code == case.code and (why := case.extra(s, text)):
        failures.append(why)
    error = next((line for line in lines if line.startswith("error: ")), None)
    named = next((line for line in lines if case.needles and case.needles[0] in line), None)
    outcome = f"exit {code}: " + (named or error or (lines[-1] if lines else "")).strip()
    outcome = outcome.replace(str(root) + "/", "").replace("error: ", "")
    _rmtree(root)
    return Result(case.name, outcome, failures, time.time() - t0)


def _rmtree(root: Path) -> None:
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            try:
                os.chmod(Path(dirpath, d), 0o755, follow_symlinks=False)
            except (OSError, NotImplementedError):
                pass
    shutil.rmtree(root, ignore_errors=True)


def run(cases: list[Case] = CASES, workers: int | None = None) -> list[Result]:
    parent = Path(tempfile.mkdtemp(prefix="bespoke-hostile-"))
    os.chmod(parent, 0o755)
    tok = parent / "tokenizers"
    sys.path.insert(0, str(REPO))
    from bespoke import tokens

    try:
        tokens.build(tok)
    except Exception:  # noqa: BLE001  (no vocabulary here: prepare then skips its token audit, with a warning)
        pass
    os.chmod(tok, 0o755) if tok.exists() else None
    try:
        with ThreadPoolExecutor(max_workers=workers or max(2, (os.cpu_count() or 2))) as pool:
            return list(pool.map(lambda c: run_case(c, tok, parent), cases))
    finally:
        _rmtree(parent)


def table(results: list[Result]) -> str:
    width = max(len(r.case) for r in results)
    rows = [f"{'case':{width}} | {'outcome':70} | result", f"{'-' * width}-|-{'-' * 70}-|-------"]
    for r in results:
        outcome = r.outcome.replace("\n", " ")
        outcome = outcome if len(outcome) <= 70 else outcome[:67] + "..."
        rows.append(f"{r.case:{width}} | {outcome:70} | {'pass' if r.ok else 'FAIL'}")
        rows += [f"{'':{width}} |   - {f}" for f in r.failures]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    cases = [c for c in CASES if not argv or any(w.lower() in c.name.lower() for w in argv)]
    t0 = time.time()
    results = run(cases)
    print(table(results))
    failed = sum(not r.ok for r in results)
    print(f"\n{len(results)} cases, {len(results) - failed} passed, {failed} failed, in {time.time() - t0:.0f} s "
          f"({os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
