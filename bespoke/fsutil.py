"""Atomic writes and hashing: outputs appear whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are for the user and the file browser
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(e, path) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _naming(e: OSError, path: Path) -> OSError:
    """The error of a write through a temporary file, naming the file the user knows: the temporary one is
    gone, and a failed write names no file at all."""
    return OSError(e.errno, e.strerror, str(path))


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy src to dst through a temporary file beside dst: dst is the old file or the whole new one."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are for the user and the file browser
        os.replace(tmp, dst)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is not None and os.fspath(e.filename) == os.fspath(src):  # the source could not be read: that is the file to name
            raise
        raise _naming(e, dst) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


JSON_MAX_BYTES = 16 << 20  # bespoke's own JSON files are kilobytes


def read_json_object(path: Path) -> dict | None:
    """A JSON object bespoke wrote (status.json, DONE.json, report.json); None when the file is missing,
    unreadable, not a regular file (a FIFO would block), over 16 MiB, not JSON or not an object."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > JSON_MAX_BYTES:
            return None
        with open(path, "rb") as f:
            obj = json.loads(f.read(JSON_MAX_BYTES + 1))
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        return None
    return obj if isinstance(obj, dict) else None


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def output_paths(inputs, out_dir: Path, suffix: str) -> list[Path]:
    """One output per input in `out_dir`, named by the input's stem: two inputs with the same stem get
    distinct names (`a.png`, `a-2.png`), and a name that is one of the inputs is refused, since no
    command writes over a file it was given."""
    from bespoke.errors import BespokeError
    from bespoke.safeio import show

    given = {os.path.realpath(p) for p in inputs}
    taken: set[str] = set()
    out = []
    for p in inputs:
        stem = Path(p).stem
        n, dest = 1, Path(out_dir) / f"{stem}{suffix}"
        while os.path.realpath(dest) in taken:
            n += 1
            dest = Path(out_dir) / f"{stem}-{n}{suffix}"
        if os.path.realpath(dest) in given:
            raise BespokeError(f"the output {show(dest)} would write over an input", show(p),
                               "pass an --out folder that holds none of the inputs")
        taken.add(os.path.realpath(dest))
        out.append(dest)
    return out


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

