"""Pixel-art scoring and sprite recovery on a known grid: pure numpy + Pillow.

`pixelate` recovers the true grid x grid sprite of a render; `score` judges whether the render is
pixel art at all. Both assume the grid is known (24 for this appliance) and infer the cell geometry
from the image size: a 1024 px render on a 24 grid has non-integer 42.67 px cells.

Every threshold below was set on synthetic cases built from demo sprites (tests/test_pixelart.py
lists them) and is documented in docs/evaluation.md. Colours are 0-255 per channel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bespoke import safeio
from bespoke.errors import BespokeError

GRID = 24
INNER = 0.6  # the centre share of a cell sampled for its colour: keeps clear of soft cell edges
MAX_SAMPLES = 11  # per cell side; odd so the median is one real sample, not an average of two

MISMATCH_TOL = 24  # a pixel further than this (any channel) from the upscaled sprite is a mismatch
PURITY_TOL = 16  # an inner pixel within this of its cell's median is pure
EDGE_STEP = 20  # an edge is a step of at least this between the 4 px means either side of it
EDGE_SPAN = 4  # px averaged each side of a candidate edge: steady under noise, JPEG and VAE softening
EDGE_ROWS = 8  # px averaged along an edge, for the same reason
BAND = 2.0  # px either side of an expected cell line that still counts as "on the grid"

MISMATCH_MAX = 0.15  # verdict: at most this share of mismatching pixels in cells next to a colour change
PURITY_MIN = 0.65  # verdict: at least this share of pure inner pixels
BOUNDARY_MIN = 0.60  # verdict: at least this share of edge strength on the grid (chance is ~0.11)
PERIOD_TOL = 0.08  # verdict: the measured grid period within 8% of width / grid

PALETTE_P95_MAX = 12.0  # palette: 95th percentile CIELAB distance of sprite colours to the training palette
COLOUR_MERGE = 8.0  # CIELAB distance under which two sprite colours count as one when counting
PHOTO_ALARM = "samples look like photos, not pixel art (the SD 1.5 failure)"


def looks_like_photos(pixel_art: int, count: int) -> bool:
    """The photo alarm: at least half of an epoch's samples are not pixel art (the SD 1.5 failure)."""
    return count > 0 and 2 * (count - pixel_art) >= count


MIN_CELL = 16  # px; smaller renders are enlarged (nearest, integer factor) so cells have an inside and edges


@dataclass(frozen=True)
class Palette:
    """The colours of a training set and the range of colour counts of its sprites."""

    colours: np.ndarray  # (n, 3) uint8
    count_range: tuple[int, int]
    source: str = ""

    @property
    def lab(self) -> np.ndarray:
        return srgb_to_lab(self.colours)


@dataclass
class Score:
    pixel_art: bool
    score: float  # 0-1, >= 0.5 exactly when pixel_art; the palette is judged apart (palette_ok)
    mismatch: float
    purity: float
    boundary: float
    grid_period: float  # px, measured; width / grid when the grid is right
    period_ok: bool
    colours: int
    palette_p95: float | None = None
    palette_ok: bool | None = None
    reasons: list[str] = field(default_factory=list)  # why it is not pixel art / off palette

    def as_dict(self) -> dict:
        return asdict(self)


def load_rgb(path: Path, grid: int | None = None, margin: int = 0) -> np.ndarray:
    """An image file as an (h, w, 3) uint8 array, read through bespoke.safeio (regular files only, bombs
    refused, every mode to RGB); with `grid`, also refuse one the grid and margin do not fit, naming it."""
    rgb = np.asarray(safeio.load_image(path)[0])
    if grid is not None:
        _crop(rgb, grid, margin, safeio.show(path))
    return rgb


def _crop(rgb: np.ndarray, grid: int, margin: int, where: str | None = None) -> np.ndarray:
    h, w = rgb.shape[:2]
    if margin < 0 or 2 * margin >= min(h, w):
        raise BespokeError(f"margin {margin} px does not fit a {w}x{h} image", where, "pass a smaller --margin")
    if margin:
        rgb = rgb[margin : h - margin, margin : w - margin]
    if min(rgb.shape[:2]) < grid:
        raise BespokeError(f"a {w}x{h} image is smaller than the {grid} grid", where,
                           "pass a render of at least GRID px a side, or check --grid")
    return rgb


def _sample_positions(length: int, grid: int) -> np.ndarray:
    """Pixel indices sampling the inner INNER share of every cell along one axis: (grid, k)."""
    cell = length / grid
    k = max(1, min(MAX_SAMPLES, int(round(INNER * cell))))
    k -= 1 - k % 2  # odd
    offsets = (1 - INNER) / 2 + INNER * (np.arange(k) + 0.5) / k
    pos = (np.arange(grid)[:, None] + offsets[None, :]) * cell
    return np.clip(pos.astype(np.int64), 0, length - 1)


def _cell_samples(rgb: np.ndarray, grid: int) -> np.ndarray:
    """(grid, grid, k*k, 3) inner samples of every cell."""
    ys, xs = _sample_positions(rgb.shape[0], grid), _sample_positions(rgb.shape[1], grid)
    block = rgb[ys.reshape(-1)[:, None], xs.reshape(-1)[None, :]]  # (grid*ky, grid*kx, 3)
    block = block.reshape(grid, ys.shape[1], grid, xs.shape[1], 3).transpose(0, 2, 1, 3, 4)
    return block.reshape(grid, grid, -1, 3)


def _median(samples: np.ndarray) -> np.ndarray:
    mid = samples.shape[2] // 2
    return np.partition(samples, mid, axis=2)[:, :, mid]


def pixelate(rgb: np.ndarray, grid: int = GRID, palette: Palette | None = None, margin: int = 0) -> np.ndarray:
    """The grid x grid sprite of a render: the median colour of each cell's centre, snapped to the palette."""
    rgb = _crop(rgb, grid, margin)
    if rgb.shape[:2] == (grid, grid):
        sprite = rgb.copy()
    else:
        sprite = _median(_cell_samples(rgb, grid))
    return snap(sprite, palette) if palette is not None else sprite


def snap(sprite: np.ndarray, palette: Palette) -> np.ndarray:
    """Each colour replaced by the nearest palette colour in CIELAB; no dithering, unlike Image.quantize."""
    nearest, _ = _nearest(sprite.reshape(-1, 3), palette)
    return palette.colours[nearest].reshape(sprite.shape)


def enlarge(sprite: np.ndarray, scale: int) -> Image.Image:
    img = Image.fromarray(sprite)
    return img if scale == 1 else img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (uint8, ..., 3) to CIELAB (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def _lab_distances(rgb: np.ndarray, lab_palette: np.ndarray) -> np.ndarray:
    """(n, m) CIELAB distances from n colours to m palette colours, by |a|^2 + |b|^2 - 2ab (one matmul)."""
    return _lab_distances_lab(srgb_to_lab(rgb), lab_palette)


def _lab_distances_lab(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a**2).sum(axis=1)[:, None] + (b**2).sum(axis=1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def _nearest(rgb: np.ndarray, palette: Palette) -> tuple[np.ndarray, np.ndarray]:
    """Index of and distance to the nearest palette colour, for (n, 3) colours; each distinct one once."""
    colours, inverse = np.unique(rgb, axis=0, return_inverse=True)
    d = _lab_distances(colours, palette.lab)
    nearest = d.argmin(axis=1)
    return nearest[inverse.reshape(-1)], d[np.arange(len(colours)), nearest][inverse.reshape(-1)]


def _channel_max(a: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])  # faster than a.max(axis=-1) for 3


def count_colours(sprite: np.ndarray) -> int:
    """Distinct colours, merging those closer than COLOUR_MERGE in CIELAB, most frequent first.

    The loop runs over distinct colours (at most grid*grid), never over pixels.
    """
    colours, counts = np.unique(sprite.reshape(-1, 3), axis=0, return_counts=True)
    lab = srgb_to_lab(colours[np.argsort(-counts, kind="stable")])
    close = _lab_distances_lab(lab, lab) < COLOUR_MERGE
    covered = np.zeros(len(lab), dtype=bool)
    leaders = []
    for i in range(len(lab)):
        if not covered[i]:
            leaders.append(i)
            covered |= close[i]
    return len(leaders)


def _busy_cells(sprite: np.ndarray) -> np.ndarray:
    """uint8 mask of the cells that border a different colour (4-neighbours, > MISMATCH_TOL).

    Mismatch is counted in these cells only: a flat cell cannot show blur, and counting the flat
    background would make a simple sprite look sharper than a busy one under the same blur.
    """
    s = sprite.astype(np.int16)
    dx = np.abs(s[:, 1:] - s[:, :-1]).max(axis=2) > MISMATCH_TOL
    dy = np.abs(s[1:] - s[:-1]).max(axis=2) > MISMATCH_TOL
    busy = np.zeros(sprite.shape[:2], dtype=bool)
    busy[:, 1:] |= dx
    busy[:, :-1] |= dx
    busy[1:] |= dy
    busy[:-1] |= dy
    return busy.astype(np.uint8)


def _edges(blocks: np.ndarray) -> np.ndarray:
    """Strength of the steps along axis 1 of (n, length, 3) uint8, at their local maxima, else 0.

    The caller has averaged EDGE_ROWS px along the edge direction, and each side of a step here is
    an EDGE_SPAN px mean: noise and JPEG ringing stay under EDGE_STEP, while a softened cell edge
    still peaks on its line.
    """
    f = blocks.astype(np.float32)
    csum = np.concatenate([np.zeros_like(f[:, :1]), np.cumsum(f, axis=1)], axis=1)
    s = EDGE_SPAN
    # step at x (the boundary between columns x-1 and x): mean of [x, x+s) minus mean of [x-s, x)
    diff = np.abs(csum[:, 2 * s :] - 2 * csum[:, s:-s] + csum[:, : -2 * s])
    step = _channel_max(diff) / s
    peak = np.zeros_like(step, dtype=bool)
    peak[:, 1:-1] = (step[:, 1:-1] >= step[:, :-2]) & (step[:, 1:-1] > step[:, 2:])
    out = np.zeros(blocks.shape[:2], dtype=np.float32)
    out[:, s : s + step.shape[1]] = np.where(peak & (step >= EDGE_STEP), step, 0.0)
    return out


def _on_grid(length: int, grid: int) -> np.ndarray:
    x = np.arange(length)
    cell = length / grid
    line = np.clip(np.round(x / cell), 1, grid - 1) * cell  # nearest interior cell line
    return np.abs(x - line) <= BAND


def _period(profiles: list[np.ndarray], grid: int) -> float:
    """The grid period, in cells, that best explains where the edges are.

    A comb of edges on the lines of a g-cell grid is phase-coherent at g cycles per image (and at
    its harmonics), whichever lines carry edges. The coherence is measured from 0.6g to 2.5g cycles
    per image and the lowest frequency within 80% of the best wins: 1.0 for a true grid, about 0.5
    for a grid of twice as many cells. Both axes add up, since a cell line is g cycles in either.
    """
    pad = 8  # zero padding: a frequency step of 1/8 cycle per image
    freqs = np.arange(int(0.6 * grid * pad), int(2.5 * grid * pad) + 1)
    power = np.zeros(len(freqs))
    total = 0.0
    for profile in profiles:
        spectrum = np.abs(np.fft.rfft(profile, pad * len(profile)))
        power += spectrum[np.minimum(freqs, len(spectrum) - 1)]
        total += float(profile.sum())
    if total == 0:
        return 0.0
    coherence = power / total
    i = int(np.argmax(coherence >= 0.8 * coherence.max()))
    while i + 1 < len(freqs) and coherence[i + 1] >= coherence[i]:  # climb to the top of that peak
        i += 1
    return float(grid * pad / freqs[i])


def _unit(value: float, good: float, threshold: float) -> float:
    """Map a component to 0-1: `good` gives 1, `threshold` gives 0.5."""
    return float(np.clip(1 - 0.5 * (good - value) / (good - threshold), 0.0, 1.0))


def score(
    rgb: np.ndarray, grid: int = GRID, palette: Palette | None = None, margin: int = 0
) -> tuple[Score, np.ndarray]:
    """Judge a render on a grid x grid grid; returns the score and the recovered (unsnapped) sprite."""
    rgb = _crop(rgb, grid, margin)
    factor = -(-MIN_CELL * grid // min(rgb.shape[:2]))  # ceil
    if factor > 1:  # a small render (the smoke test's 64 px, a bare sprite): same pixels, room to measure
        rgb = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
    h, w = rgb.shape[:2]
    samples = _cell_samples(rgb, grid)
    sprite = _median(samples)
    centre = np.broadcast_to(sprite[:, :, None], samples.shape)
    purity = float((_channel_max(np.maximum(samples, centre) - np.minimum(samples, centre)) <= PURITY_TOL).mean())

    image = Image.fromarray(rgb)
    recon = np.asarray(Image.fromarray(sprite).resize((w, h), Image.Resampling.NEAREST))
    diff = np.maximum(rgb, recon) - np.minimum(rgb, recon)  # |rgb - recon| without leaving uint8
    bad = _channel_max(diff) > MISMATCH_TOL
    busy = np.asarray(Image.fromarray(_busy_cells(sprite)).resize((w, h), Image.Resampling.NEAREST)) > 0
    mismatch = float(np.count_nonzero(bad & busy) / np.count_nonzero(busy)) if busy.any() else float(bad.mean())

    across = _edges(np.asarray(image.reduce((1, EDGE_ROWS))))  # vertical edges, found along x
    down = _edges(np.asarray(image.reduce((EDGE_ROWS, 1))).transpose(1, 0, 2))  # horizontal ones, along y
    total = float(across.sum() + down.sum())
    on = float(across[:, _on_grid(w, grid)].sum() + down[:, _on_grid(h, grid)].sum())
    boundary = on / total if total else 0.0
    period_cells = _period([across.sum(axis=0), down.sum(axis=0)], grid)
    period = period_cells * w / grid
    period_ok = abs(period_cells - 1) <= PERIOD_TOL

    reasons = []
    if mismatch > MISMATCH_MAX:
        reasons.append(f"mismatch {mismatch:.2f} > {MISMATCH_MAX}")
    if purity < PURITY_MIN:
        reasons.append(f"purity {purity:.2f} < {PURITY_MIN}")
    if boundary < BOUNDARY_MIN:
        reasons.append(f"boundary {boundary:.2f} < {BOUNDARY_MIN}")
    if not period_ok:
        reasons.append(f"grid period {period:.1f} px, expected {w / grid:.1f}")
    units = [
        _unit(mismatch, 0.0, MISMATCH_MAX),
        _unit(purity, 1.0, PURITY_MIN),
        _unit(boundary, 1.0, BOUNDARY_MIN),
        _unit(abs(period_cells - 1), 0.0, PERIOD_TOL),
    ]
    result = Score(
        pixel_art=not reasons, score=0.0, mismatch=mismatch, purity=purity, boundary=boundary,
        grid_period=period, period_ok=period_ok, colours=count_colours(sprite), reasons=reasons,
    )
    if palette is not None:
        result.palette_p95 = float(np.percentile(_nearest(sprite.reshape(-1, 3), palette)[1], 95))
        lo, hi = palette.count_range
        result.palette_ok = result.palette_p95 <= PALETTE_P95_MAX and lo <= result.colours <= hi
        if result.palette_p95 > PALETTE_P95_MAX:
            result.reasons.append(f"off palette: p95 distance {result.palette_p95:.1f} > {PALETTE_P95_MAX}")
        if not lo <= result.colours <= hi:
            result.reasons.append(f"{result.colours} colours, training range {lo}-{hi}")
    # the mean of the components, halved for a failing image: score >= 0.5 exactly when pixel art
    result.score = float(np.mean(units)) * (1.0 if result.pixel_art else 0.5)
    return result, sprite


def load_palette(folder: Path, grid: int = GRID) -> Palette:
    """The palette of a training set: every colour of every sprite, and their colour-count range.

    Sprites are read directly when they are grid x grid, else recovered with `pixelate`; the allowed
    count range is half the smallest to twice the largest, since samples need not match exactly.
    """
    folder = Path(folder)
    files = safeio.image_files(folder, {".png", ".jpg", ".jpeg", ".webp"})
    if not files:
        raise BespokeError("no training images to take a palette from", str(folder), "pass the dataset folder")
    colours, counts = [], []
    for path in files:
        rgb = load_rgb(path, grid)
        sprite = rgb if rgb.shape[:2] == (grid, grid) else pixelate(rgb, grid)
        colours.append(np.unique(sprite.reshape(-1, 3), axis=0))
        counts.append(count_colours(sprite))
    return Palette(
        colours=np.unique(np.concatenate(colours), axis=0),
        count_range=(max(1, min(counts) // 2), 2 * max(counts)),
        source=str(folder),
    )
