"""The validation cases of issue 5: synthetic renders of demo sprites that must pass or fail."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from bespoke.demo import make_sprite, write_demo_data
from bespoke.errors import BespokeError
from bespoke.eval import pixelart

SEEDS = range(6)
NEAREST, LANCZOS, BOX, BICUBIC = (Image.Resampling.NEAREST, Image.Resampling.LANCZOS, Image.Resampling.BOX,
                                  Image.Resampling.BICUBIC)


def rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def upscale(sprite: Image.Image, size: int = 1024, method=NEAREST) -> Image.Image:
    return sprite.resize((size, size), method)


def add_noise(img: Image.Image, sigma: float = 8.0, seed: int = 0) -> Image.Image:
    noisy = rgb(img) + np.random.default_rng(seed).normal(0, sigma, rgb(img).shape)
    return Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))


def jpeg(img: Image.Image, quality: int = 60) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def vae_soften(img: Image.Image) -> Image.Image:
    """What an SDXL VAE does to hard edges, roughly: box down x8, bicubic back up."""
    return img.resize((img.width // 8, img.height // 8), BOX).resize(img.size, BICUBIC)


def half_cell_shift(img: Image.Image) -> Image.Image:
    d = round(img.width / pixelart.GRID / 2)
    return Image.fromarray(np.roll(rgb(img), (d, d), axis=(0, 1)))


def pink_noise(seed: int, size: int = 1024) -> Image.Image:
    """1/f noise: the spectrum of natural photographs, without scipy or skimage."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    f[0, 0] = 1.0
    beta = 1.0 + 0.25 * (seed % 3)  # from grainy to smooth
    channels = []
    for _ in range(3):
        spectrum = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f**beta
        spectrum[0, 0] = 0
        x = np.fft.irfft2(spectrum, s=(size, size))
        channels.append((x - x.mean()) / x.std())
    return Image.fromarray(np.clip(np.stack(channels, -1) * 40 + 128, 0, 255).astype(np.uint8))


def grid48(seed: int) -> Image.Image:
    """Four sprites in a 48x48 canvas: real 48-cell detail, scored as if it were 24."""
    canvas = Image.new("RGB", (48, 48))
    for k in range(4):
        canvas.paste(make_sprite(seed * 4 + k), ((k % 2) * 24, (k // 2) * 24))
    return upscale(canvas)


MUST_PASS = {
    "nearest x40": lambda s, seed: upscale(s, 960),
    "nearest to 1024": lambda s, seed: upscale(s),
    "gaussian noise": lambda s, seed: add_noise(upscale(s), 8.0, seed),
    "jpeg q60": lambda s, seed: jpeg(upscale(s)),
    "noise then jpeg": lambda s, seed: jpeg(add_noise(upscale(s), 8.0, seed)),
    "vae softening": lambda s, seed: vae_soften(upscale(s)),
    "mild blur 3 at 960": lambda s, seed: upscale(s, 960).filter(ImageFilter.GaussianBlur(3)),
}
MUST_FAIL = {
    "lanczos": lambda s, seed: upscale(s, method=LANCZOS),
    "strong blur 10": lambda s, seed: upscale(s).filter(ImageFilter.GaussianBlur(10)),
    "half-cell shift": lambda s, seed: half_cell_shift(upscale(s)),
    "1/f noise": lambda s, seed: pink_noise(seed),
    "48 grid as 24": lambda s, seed: grid48(seed),
}


@pytest.fixture(scope="module")
def palette(tmp_path_factory) -> pixelart.Palette:
    folder = tmp_path_factory.mktemp("demo")
    write_demo_data(folder, count=12, seed=0)
    return pixelart.load_palette(folder)


@pytest.mark.parametrize("case", MUST_PASS)
def test_pixel_art_renders_pass(case):
    for seed in SEEDS:
        result, _ = pixelart.score(rgb(MUST_PASS[case](make_sprite(seed), seed)))
        assert result.pixel_art, (case, seed, result)
        assert result.score >= 0.5 and not result.reasons


@pytest.mark.parametrize("case", MUST_FAIL)
def test_non_pixel_art_renders_fail(case):
    for seed in SEEDS:
        result, _ = pixelart.score(rgb(MUST_FAIL[case](make_sprite(seed), seed)))
        assert not result.pixel_art, (case, seed, result)
        assert result.score < 0.5 and result.reasons


def test_each_failure_is_caught_by_the_component_meant_for_it():
    sprite = make_sprite(1)
    assert pixelart.score(rgb(half_cell_shift(upscale(sprite))))[0].boundary < pixelart.BOUNDARY_MIN
    assert pixelart.score(rgb(upscale(sprite, method=LANCZOS)))[0].mismatch > pixelart.MISMATCH_MAX
    forty_eight = pixelart.score(rgb(grid48(1)))[0]
    assert not forty_eight.period_ok and forty_eight.grid_period == pytest.approx(1024 / 48, rel=0.05)
    photo = pixelart.score(rgb(pink_noise(2)))[0]
    assert photo.boundary < 0.2  # chance is ~0.12


def test_grid_period_is_measured_on_non_integer_cells():
    result, _ = pixelart.score(rgb(upscale(make_sprite(4))))
    assert result.period_ok and result.grid_period == pytest.approx(1024 / 24, rel=0.02)


@pytest.mark.parametrize("render", ["nearest to 1024", "nearest x40"])
def test_clean_renders_give_back_the_exact_sprite(render):
    for seed in SEEDS:
        truth = rgb(make_sprite(seed))
        assert np.array_equal(pixelart.pixelate(rgb(MUST_PASS[render](make_sprite(seed), seed))), truth)


@pytest.mark.parametrize("render", ["gaussian noise", "jpeg q60", "noise then jpeg", "vae softening"])
def test_degraded_renders_give_back_at_least_98_percent_of_cells(render, palette):
    for seed in SEEDS:
        truth = rgb(make_sprite(seed))
        image = rgb(MUST_PASS[render](make_sprite(seed), seed))
        snapped = pixelart.pixelate(image, palette=palette)
        assert (snapped == truth).all(axis=2).mean() >= 0.98, (render, seed)
        # without a palette no cell is exact under noise, but every one is close
        raw = pixelart.pixelate(image)
        assert (np.abs(raw.astype(int) - truth).max(axis=2) <= 8).mean() >= 0.98, (render, seed)


def test_palette_catches_an_off_palette_sprite(palette):
    on, _ = pixelart.score(rgb(jpeg(add_noise(upscale(make_sprite(2))))), palette=palette)
    assert on.palette_ok and on.palette_p95 < pixelart.PALETTE_P95_MAX
    inverted = Image.fromarray(255 - rgb(make_sprite(2)))
    off, _ = pixelart.score(rgb(upscale(inverted)), palette=palette)
    assert off.pixel_art  # still crisp pixel art, just the wrong colours
    assert off.palette_ok is False and off.palette_p95 > pixelart.PALETTE_P95_MAX
    assert any("off palette" in r for r in off.reasons)


def test_palette_catches_too_many_colours(palette):
    result, _ = pixelart.score(rgb(pink_noise(0)), palette=palette)
    assert result.colours > palette.count_range[1] and result.palette_ok is False


def test_load_palette_reads_sprites_and_upscaled_renders_alike(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    small.mkdir()
    big.mkdir()
    for seed in range(3):
        make_sprite(seed).save(small / f"{seed}.png")
        upscale(make_sprite(seed)).save(big / f"{seed}.png")
    a, b = pixelart.load_palette(small), pixelart.load_palette(big)
    assert np.array_equal(a.colours, b.colours) and a.count_range == b.count_range


def test_snap_picks_the_nearest_palette_colour_without_dithering():
    palette = pixelart.Palette(colours=np.array([[0, 0, 0], [255, 255, 255]], np.uint8), count_range=(1, 4))
    grey = np.full((24, 24, 3), 90, np.uint8)  # L* 38: nearer black; dithering would mix in white
    assert (pixelart.snap(grey, palette) == 0).all()


def test_pixelate_handles_a_margin():
    sprite = make_sprite(5)
    framed = Image.new("RGB", (1024 + 64, 1024 + 64), (255, 0, 255))
    framed.paste(upscale(sprite), (32, 32))
    assert np.array_equal(pixelart.pixelate(rgb(framed), margin=32), rgb(sprite))
    assert pixelart.score(rgb(framed), margin=32)[0].pixel_art


def test_small_renders_are_scored_too():
    sprite = rgb(make_sprite(0))
    assert np.array_equal(pixelart.pixelate(sprite), sprite)
    assert pixelart.score(sprite)[0].pixel_art  # a bare sprite is pixel art
    for seed in SEEDS:  # the smoke test's tiny model samples at 64 px
        assert pixelart.score(rgb(upscale(make_sprite(seed), 64)))[0].pixel_art
        noise = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        assert not pixelart.score(noise)[0].pixel_art
        assert not pixelart.score(rgb(pink_noise(seed, 64)))[0].pixel_art


def test_unreadable_image_is_a_user_error(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(BespokeError, match="is not an image"):
        pixelart.load_rgb(bad)


def test_lab_conversion_matches_reference_values():
    lab = pixelart.srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]], np.uint8))
    assert lab[0] == pytest.approx([100, 0, 0], abs=0.1)
    assert lab[1] == pytest.approx([0, 0, 0], abs=0.1)
    assert lab[2] == pytest.approx([53.24, 80.09, 67.20], abs=0.2)
