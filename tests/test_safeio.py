"""bespoke.safeio: the one way user files, zip entries and images are read."""

from __future__ import annotations

import io
import os
import socket
import struct
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bespoke import safeio
from bespoke.safeio import InputError

HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def png_header(w: int, h: int, depth: int = 8, colour: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# --- every Pillow mode: distinct colours stay distinct, or the mode is refused by name -------------

def _distinct(img: Image.Image) -> int:
    return len(set(img.getdata()))


SOURCE = Image.fromarray(np.array([[[0, 0, 0], [255, 255, 255], [200, 30, 30], [30, 200, 30]],
                                   [[30, 30, 200], [240, 200, 40], [128, 128, 128], [90, 40, 140]]], dtype=np.uint8))
MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX", "RGBa"]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_keeps_its_distinct_colours(mode):
    img = SOURCE.convert(mode) if mode not in ("PA",) else SOURCE.convert("P").convert("PA")
    out, _ = safeio.to_rgb(img)
    assert out.mode == "RGB" and out.size == img.size
    assert _distinct(out) == _distinct(img), f"{mode}: {_distinct(img)} colours in, {_distinct(out)} out"


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_16_bit_grey_is_scaled_not_clipped_to_white(mode):
    levels = np.array([[0, 1000, 20000, 40000, 65535]], dtype=">u2" if mode == "I;16B" else "<u2")
    img = Image.frombytes(mode, (5, 1), levels.tobytes())
    out, _ = safeio.to_rgb(img)
    grey = np.asarray(out)[0, :, 0]
    assert list(grey) == sorted(grey) and len(set(grey)) == 5  # order and distinctness kept
    assert grey[0] == 0 and grey[-1] == 255 and grey[1] < 255


@pytest.mark.parametrize("fmt,mode", [("PNG", "I;16"), ("PNG", "1"), ("PNG", "LA"), ("PNG", "P"), ("PNG", "RGBA"),
                                      ("TIFF", "CMYK"), ("TIFF", "F"), ("TIFF", "I"), ("TIFF", "LAB"),
                                      ("BMP", "RGB"), ("WEBP", "RGB"), ("GIF", "P")])
def test_files_of_each_mode_keep_their_colours(fmt, mode):
    """The round trip through a real file: Pillow may open it in another mode; the colours survive."""
    if mode == "I;16":
        img = Image.fromarray(np.array([[0, 5000, 30000, 65535]], dtype=np.uint16))
    else:
        img = SOURCE.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    out, _ = safeio.open_image(buf.getvalue(), f"x.{fmt.lower()}")
    assert _distinct(out) == _distinct(img)


def test_a_mode_that_cannot_become_rgb_is_refused_by_name():
    with pytest.raises(InputError, match="image mode La") as e:
        safeio.to_rgb(Image.new("La", (2, 2)), "odd.png")
    assert "odd.png" in e.value.line()


def test_transparent_pixels_flatten_onto_the_border_colour():
    img = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    img.putpixel((2, 2), (255, 0, 0, 0))
    out, had_alpha = safeio.to_rgb(img)
    assert had_alpha and out.getpixel((2, 2)) == (10, 20, 30)


# --- bombs and broken headers ----------------------------------------------------------------------

@pytest.mark.parametrize("w,h", [(20000, 20000), (9000, 9000), (1, 70_000_000), (65535, 65535)])
def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(w, h):
    with pytest.raises(InputError, match="bomb") as e:
        safeio.open_image(png_header(w, h), "bomb.png")
    assert e.value.where == "bomb.png"


def test_the_expected_size_is_checked_before_decoding():
    with pytest.raises(safeio.SizeMismatch) as e:
        safeio.open_image(png_header(32, 32), "x.png", expect=(24, 24))  # IDAT is garbage: never decoded
    assert e.value.size == (32, 32)


@HYPO
@given(w=st.integers(0, 2**31 - 1), h=st.integers(0, 2**31 - 1), depth=st.sampled_from([1, 2, 4, 8, 16, 3, 0]),
       colour=st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
def test_any_png_header_opens_or_is_refused_in_one_line(w, h, depth, colour):
    try:
        img, _ = safeio.open_image(png_header(w, h, depth, colour), "h.png")
    except InputError as e:
        assert e.where == "h.png" and "\n" not in e.line()
    else:
        assert img.mode == "RGB" and img.size[0] * img.size[1] <= safeio.MAX_PIXELS


@HYPO
@given(data=st.binary(max_size=300), cut=st.integers(0, 400))
def test_any_bytes_open_or_are_refused_in_one_line(data, cut):
    good = png_bytes(Image.new("RGB", (24, 24), (1, 2, 3)))
    for blob in (data, good[:cut] + data, b"\x89PNG\r\n\x1a\n" + data):
        try:
            safeio.open_image(blob, "x.png")
        except InputError as e:
            assert "\n" not in e.line()


# --- files: only regular ones, capped ----------------------------------------------------------------

def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="FIFO"):
        safeio.read_file(fifo, 100)  # opening it for reading would block forever


def test_a_socket_and_a_device_and_a_folder_are_refused(tmp_path):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s"))
    sock.close()
    (tmp_path / "d").mkdir()
    for path, kind in ((tmp_path / "s", "socket"), ("/dev/null", "device"), (tmp_path / "d", "folder")):
        with pytest.raises(InputError, match=kind):
            safeio.read_file(path, 100)


def test_loops_and_broken_links_are_named(tmp_path):
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "gone").symlink_to("nowhere")
    with pytest.raises(InputError, match="symlink loop"):
        safeio.read_file(tmp_path / "loop", 10)
    with pytest.raises(InputError, match="broken symlink"):
        safeio.read_file(tmp_path / "gone", 10)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file (bench/hostile.py drops the capability)")
def test_an_unreadable_file_is_named(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("x")
    f.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        safeio.read_file(f, 10)


def test_a_file_is_capped_by_what_is_read(tmp_path):
    f = tmp_path / "big.txt"
    with open(f, "wb") as fh:
        fh.truncate(10 << 20)  # sparse: 10 MB that cost nothing
    assert safeio.read_file(tmp_path / "big.txt", 10 << 20) == b"\0" * (10 << 20)
    with pytest.raises(InputError, match="larger than"):
        safeio.read_file(f, 1 << 16)


def test_a_zip_entry_is_capped_by_its_inflated_size_not_its_header(tmp_path):
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.txt", b"\0" * 5_000_000)
    raw = bytearray(z.read_bytes())
    for sig, off in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):  # both headers now say 10 bytes
        struct.pack_into("<I", raw, raw.find(sig) + off, 10)
    z.write_bytes(bytes(raw))
    with zipfile.ZipFile(z) as zf:
        with pytest.raises(InputError) as e:
            safeio.read_zip_entry(zf, zf.infolist()[0], 1 << 16, "a.zip:a.txt")
    assert "a.zip:a.txt" in e.value.line()


@HYPO
@given(size=st.integers(0, 300_000), limit=st.integers(1, 200_000))
def test_zip_entries_over_the_limit_are_refused_under_it_read_whole(tmp_path, size, limit):
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x", b"a" * size)
    with zipfile.ZipFile(z) as zf:
        if size > limit:
            with pytest.raises(InputError, match="inflates to more than"):
                safeio.read_zip_entry(zf, zf.infolist()[0], limit, "x")
        else:
            assert safeio.read_zip_entry(zf, zf.infolist()[0], limit, "x") == b"a" * size


# --- names and text ----------------------------------------------------------------------------------

@given(st.text(max_size=40))
def test_a_shown_name_is_always_one_printable_line(name):
    shown = safeio.show(name)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown
    assert shown.isprintable()
    if name.isprintable() and not any(c in name for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"):
        assert shown == name


def test_non_utf8_bytes_in_a_name_are_shown_as_hex():
    name = os.fsdecode(b"bad\xff\xfe.png")
    assert safeio.show(name) == "bad\\xff\\xfe.png"
    assert safeio.name_problem(name) == "its name is not valid UTF-8"


@pytest.mark.parametrize("text,char", [("a\0b", "\\x00"), ("a\x1b[31m", "\\x1b"), ("x\x07", "\\x07"),
                                       ("evil\u202e", "\\u202e"), ("del\x7f", "\\x7f")])
def test_control_characters_in_text_are_named(text, char):
    assert char in safeio.text_problem(text)


def test_tabs_and_line_breaks_are_ordinary_text():
    assert safeio.text_problem("pixel art,\tbespoke punk\r\n") is None
