"""Seeded synthetic whole-slide smears, written as tiled pyramidal TIFFs, for the demo, tests and bench (issue 18).

A wedge smear runs along x: the thick zone where the drop was (red cells piled up, nucleated cells
clumped), the monolayer a hematologist reads (red cells just touching, nucleated cells apart), then the
feathered edge (sparse cells) and bare glass. A few marrow particles (dark clumps) lie in the thick zone
and the monolayer. Everything is drawn tile by tile from hashes of lattice points, so any region renders
on its own, identically, and a 40,000 x 40,000 px slide is written without holding it in memory.

Coordinates are level-0 pixels; `um_per_px` gives sizes in micrometres. Nothing here is patient data.
"""

from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import tifffile

from mdsdys.demo.synth_cells import to_od

GLASS, THICK, MONOLAYER, EDGE, PARTICLE = 0, 1, 2, 3, 4
ZONE_NAMES = {GLASS: "glass", THICK: "thick", MONOLAYER: "monolayer", EDGE: "feathered or side edge",
              PARTICLE: "particle"}
RBC_UM = 7.5          # a red cell's diameter
NUCLEATED_PITCH_UM = 40.0  # lattice pitch of nucleated cells: ~15 per 200 µm field in the monolayer
NUCLEUS_UM = (7.0, 11.0)   # nucleus diameters drawn uniformly in this range (the 9 µm prior sits in the middle)
CELL_RATIO = (1.3, 1.8)    # whole cell / nucleus diameter
PARTICLE_MARGIN_UM = 25.0  # truth counts this rim around a particle as part of it
_GLASS_T = (0.95, 0.95, 0.96)
_RBC_T = (0.88, 0.56, 0.60)
_CYTO_T = (0.68, 0.74, 0.90)      # basophilic cytoplasm absorbs red light: blue-grey
_NUC_T = (0.36, 0.22, 0.46)
_PARTICLE_T = (0.22, 0.13, 0.32)
_GLASS_RGB = (np.exp(-to_od(_GLASS_T)) * 255 + 0.5).astype(np.uint8)
_Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class SmearLayout:
    """Where the zones of a synthetic smear lie; x bands are fractions of the width, before the wave."""

    width: int = 4000
    height: int = 4000
    um_per_px: float = 0.5           # a 20x scan; 40x scanners give 0.25
    seed: int = 0
    start: float = 0.04              # smear begins (the drop)
    thick_end: float = 0.30
    mono_end: float = 0.72
    feather_end: float = 0.88
    side: float = 0.08               # bare glass above and below the smear, fraction of the height
    side_edge_um: float = 150.0      # the smear's long sides are thin, like its feathered end
    wave: float = 0.015              # boundaries bend by this fraction of the width
    particles_per_mm2: float = 0.08

    @property
    def px_per_um(self) -> float:
        return 1.0 / self.um_per_px

    @cached_property
    def particles(self) -> np.ndarray:
        """(N, 3) float: x, y, radius in px of each marrow particle; 60% thick zone, 40% monolayer."""
        rng = np.random.default_rng([self.seed, 7])
        area_mm2 = self.width * self.height * (self.um_per_px / 1000) ** 2
        n = max(2, round(area_mm2 * self.particles_per_mm2))
        in_mono = np.arange(n) % 5 >= 3
        lo = np.where(in_mono, self.thick_end + 0.04, self.start + 0.05)
        hi = np.where(in_mono, self.mono_end - 0.04, self.thick_end - 0.03)
        x = rng.uniform(lo, hi) * self.width
        y = rng.uniform(self.side + 0.1, 1 - self.side - 0.1, n) * self.height
        r = rng.uniform(40, 80, n) * self.px_per_um
        return np.stack([x, y, r], axis=1)


def _warp(layout: SmearLayout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x as a fraction of the width, with the wavy boundaries straightened."""
    return x / layout.width - layout.wave * np.sin(2 * math.pi * 1.5 * y / layout.height + layout.seed)


def thickness(layout: SmearLayout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Layers of red cells at level-0 points: ~3 at the drop, ~1 in the monolayer, <0.6 at the edges, 0 on glass."""
    f = _warp(layout, np.asarray(x, float), np.asarray(y, float))
    t = np.zeros_like(f)
    thick = (f >= layout.start) & (f < layout.thick_end)
    t[thick] = 3.0 - 1.4 * (f[thick] - layout.start) / (layout.thick_end - layout.start)
    mono = (f >= layout.thick_end) & (f < layout.mono_end)
    t[mono] = 1.05 - 0.1 * (f[mono] - layout.thick_end) / (layout.mono_end - layout.thick_end)
    edge = (f >= layout.mono_end) & (f < layout.feather_end)
    t[edge] = 0.6 - 0.55 * (f[edge] - layout.mono_end) / (layout.feather_end - layout.mono_end)
    inside = _side_distance_um(layout, np.asarray(y, float))
    t[inside <= 0] = 0
    taper = (inside > 0) & (inside < layout.side_edge_um)
    t[taper] *= np.minimum(1.0, 0.15 + 0.45 * inside[taper] / layout.side_edge_um)
    return t


def _side_distance_um(layout: SmearLayout, y: np.ndarray) -> np.ndarray:
    """Distance in µm from the nearest long side of the smear (negative outside it)."""
    lo, hi = layout.side * layout.height, (1 - layout.side) * layout.height
    return np.minimum(y - lo, hi - y) * layout.um_per_px


def zone_at(layout: SmearLayout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The true zone code (GLASS ... PARTICLE) at level-0 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    f = _warp(layout, x, y)
    zone = np.full(f.shape, GLASS, np.int8)
    zone[(f >= layout.start) & (f < layout.thick_end)] = THICK
    zone[(f >= layout.thick_end) & (f < layout.mono_end)] = MONOLAYER
    zone[(f >= layout.mono_end) & (f < layout.feather_end)] = EDGE
    side = _side_distance_um(layout, y)
    zone[(zone != GLASS) & (side < layout.side_edge_um)] = EDGE
    zone[side <= 0] = GLASS
    for px, py, r in layout.particles:
        zone[np.hypot(x - px, y - py) < r + PARTICLE_MARGIN_UM * layout.px_per_um] = PARTICLE
    return zone


def zone_fraction(layout: SmearLayout, box: tuple[int, int, int, int], zone: int = MONOLAYER, n: int = 16) -> float:
    """Fraction of an (x, y, w, h) level-0 box in a zone, on an n x n grid of sample points."""
    x, y, w, h = box
    xs, ys = np.meshgrid(x + (np.arange(n) + 0.5) * w / n, y + (np.arange(n) + 0.5) * h / n)
    return float(np.mean(zone_at(layout, xs, ys) == zone))


# --- deterministic lattices -----------------------------------------------------------------------

def _hash_uniform(seed: int, salt: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) floats from (seed, salt, i, j), the same whichever region asks (splitmix64)."""
    with np.errstate(over="ignore"):
        z = (np.uint64(seed * 1_000_003 + salt) * np.uint64(0x9E3779B97F4A7C15)
             + i.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
             + j.astype(np.uint64) * np.uint64(0x94D049BB133111EB))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _lattice(x0: float, y0: float, x1: float, y1: float, pitch: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer lattice indices (i, j) whose cells meet the region."""
    i = np.arange(math.floor(x0 / pitch), math.ceil(x1 / pitch) + 1)
    j = np.arange(math.floor(y0 / pitch), math.ceil(y1 / pitch) + 1)
    ii, jj = np.meshgrid(i, j)
    return ii.ravel(), jj.ravel()


@dataclass(frozen=True)
class TrueCell:
    """A nucleated cell the generator drew: centre in level-0 px and sizes in µm."""

    x: float
    y: float
    nucleus_um: float
    cell_um: float
    nucleus_dx: float   # nucleus centre offset from the cell centre, px
    nucleus_dy: float


def cells_in(layout: SmearLayout, box: tuple[float, float, float, float], margin: float = 0.0) -> list[TrueCell]:
    """Every nucleated cell whose centre lies in the (x, y, w, h) level-0 box grown by margin px."""
    x0, y0, w, h = box
    x0, y0, x1, y1 = x0 - margin, y0 - margin, x0 + w + margin, y0 + h + margin
    pitch = NUCLEATED_PITCH_UM * layout.px_per_um
    found = []
    for layer in range(3):  # clumped where thick: more than one lattice contributes
        i, j = _lattice(x0, y0, x1, y1, pitch)
        u = [_hash_uniform(layout.seed, 500 + 10 * layer + k, i, j) for k in range(7)]
        x = (i + 0.5 + 0.5 * (u[0] - 0.5) + 0.5 * (layer % 2)) * pitch
        y = (j + 0.5 + 0.5 * (u[1] - 0.5) + 0.33 * layer) * pitch
        keep = (u[2] < 0.6 * np.clip(thickness(layout, x, y) - layer, 0, 1)) & (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        nucleus = NUCLEUS_UM[0] + (NUCLEUS_UM[1] - NUCLEUS_UM[0]) * u[3]
        cell = nucleus * (CELL_RATIO[0] + (CELL_RATIO[1] - CELL_RATIO[0]) * u[4])
        room = (cell - nucleus) / 2 * layout.px_per_um * 0.6  # the nucleus stays inside the cell
        angle = 2 * math.pi * u[5]
        for k in np.flatnonzero(keep):
            found.append(TrueCell(float(x[k]), float(y[k]), float(nucleus[k]), float(cell[k]),
                                  float(room[k] * u[6][k] * math.cos(angle[k])), float(room[k] * u[6][k] * math.sin(angle[k]))))
    return found


# --- drawing --------------------------------------------------------------------------------------

_RBC_SCALES = (0.92, 1.0, 1.08)
RBC_PERIOD = 1024  # px: red-cell layers are textures that repeat this often (a multiple of the usual tiles)


def _disc(radius: float, soft: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) alpha of a soft-edged disc and its (S, S) distance from the centre."""
    half = int(math.ceil(radius + 1))
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    dist = np.hypot(yy, xx)
    return np.clip((radius - dist) / soft + 0.5, 0, 1), dist


@dataclass(frozen=True)
class _RedCellLayer:
    """One layer of touching red cells as a periodic texture, with which red cell owns each pixel.

    A red cell is kept where the smear's thickness at its centre exceeds its layer plus a random draw, so
    whole cells come and go; drawing from a texture costs a few array slices per tile instead of a stamp
    per cell (a 40,000 px slide holds ~10 million red cells).
    """

    thick: np.ndarray   # (P, P) float32, red-cell thickness (1 = one full cell)
    draw: np.ndarray    # (P, P) float32, the owning red cell's keep draw in [0, 1); 2 where none
    dy: np.ndarray      # (P, P) int16, offset from the pixel to its red cell's centre
    dx: np.ndarray


def _red_cell_layer(layout: SmearLayout, layer: int) -> _RedCellLayer:
    size = RBC_PERIOD
    n = max(1, round(size / (RBC_UM * 1.02 * layout.px_per_um)))  # touching, with a little glass between
    pitch = size / n
    i, j = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n)))
    u = [_hash_uniform(layout.seed, 100 + 10 * layer + k, i, j) for k in range(4)]
    # Layers sit on lattices shifted against each other, so their cells do not stack in register.
    cx = (i + 0.5 + 0.5 * (layer % 2) + 0.3 * (u[0] - 0.5)) * pitch
    cy = (j + 0.5 + 0.37 * layer + 0.3 * (u[1] - 0.5)) * pitch
    thick = np.zeros((size, size), np.float32)
    owner = np.zeros((size, size), np.float32)
    draw = np.full((size, size), 2.0, np.float32)
    dy, dx = np.zeros((size, size), np.int16), np.zeros((size, size), np.int16)
    stamps = [_red_cell(RBC_UM / 2 * scale * layout.px_per_um) for scale in _RBC_SCALES]
    for k in range(len(i)):
        alpha, body = stamps[int(u[3][k] * len(stamps))]
        half = alpha.shape[0] // 2
        top, left = int(round(cy[k])) - half, int(round(cx[k])) - half
        rows, cols = np.arange(top, top + alpha.shape[0]) % size, np.arange(left, left + alpha.shape[1]) % size
        window = np.ix_(rows, cols)
        thick[window] += body
        mine = alpha > owner[window]
        owner[window] = np.where(mine, alpha, owner[window])
        draw[window] = np.where(mine, u[2][k], draw[window])
        offsets = np.arange(alpha.shape[0]) - half
        dy[window] = np.where(mine, -offsets[:, None], dy[window])
        dx[window] = np.where(mine, -offsets[None, :], dx[window])
    return _RedCellLayer(thick, draw, dy, dx)


def _red_cell(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, thickness) stamps of one red cell: a disc, thinner in the middle (central pallor)."""
    alpha, dist = _disc(radius)
    return alpha, (alpha * (1 - 0.45 * np.exp(-((dist / (0.45 * radius)) ** 2)))).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _red_cell_layers(um_per_px: float, seed: int) -> tuple[_RedCellLayer, ...]:
    layout = SmearLayout(um_per_px=um_per_px, seed=seed)
    return tuple(_red_cell_layer(layout, k) for k in range(3))


def _periodic(texture: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """The (h, w) window of a periodic texture at (x, y): a view when it does not wrap."""
    size = texture.shape[0]
    x0, y0 = x % size, y % size
    if x0 + w <= size and y0 + h <= size:
        return texture[y0:y0 + h, x0:x0 + w]
    return texture[np.ix_(np.arange(y0, y0 + h) % size, np.arange(x0, x0 + w) % size)]


_GRID = 8  # px: the smear's thickness is looked up on this grid (it changes over tens of µm)


def _red_cell_thickness(layout: SmearLayout, x: int, y: int, w: int, h: int) -> np.ndarray:
    """(h, w) float32 red-cell layers at a level-0 region: layer k's cells kept where thickness > k + draw.

    Each cell's thickness is read at its centre, snapped to an absolute 8 px grid, so every pixel of a
    cell (and every tile that shows it) makes the same choice.
    """
    margin = int(RBC_UM * layout.px_per_um) + _GRID
    gx0, gy0 = (x - margin) // _GRID, (y - margin) // _GRID
    gx, gy = np.arange(gx0, (x + w + margin) // _GRID + 1), np.arange(gy0, (y + h + margin) // _GRID + 1)
    coarse = thickness(layout, *np.meshgrid((gx + 0.5) * _GRID, (gy + 0.5) * _GRID)).astype(np.float32)
    cols, rows = np.arange(x, x + w)[None, :], np.arange(y, y + h)[:, None]
    total = np.zeros((h, w), np.float32)
    for layer, texture in enumerate(_red_cell_layers(layout.um_per_px, layout.seed)):
        at = ((_periodic(texture.dy, x, y, w, h) + rows) // _GRID - gy0,
              (_periodic(texture.dx, x, y, w, h) + cols) // _GRID - gx0)
        keep = _periodic(texture.draw, x, y, w, h) < np.clip(coarse[at] - layer, 0, 1)
        total += np.where(keep, _periodic(texture.thick, x, y, w, h), 0)
    return total


def _any_smear(layout: SmearLayout, x: int, y: int, w: int, h: int) -> bool:
    """Whether a region (grown by a red cell) touches the smear, on a coarse grid."""
    pad = RBC_UM * layout.px_per_um
    xs, ys = np.meshgrid(np.linspace(x - pad, x + w + pad, 17), np.linspace(y - pad, y + h + pad, 17))
    return bool((thickness(layout, xs, ys) > 0).any())


def _clip(shape: tuple[int, int], top: int, left: int, h: int, w: int) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """(canvas, stamp) slices where an (h, w) stamp at (top, left) meets the canvas."""
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, shape[0]), min(left + w, shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))


def _cover(od: np.ndarray, alpha: np.ndarray, colour: np.ndarray, cx: float, cy: float) -> tuple | None:
    """Lay an opaque-ish layer over the canvas (what lies under a nucleated cell is hidden)."""
    half = alpha.shape[0] // 2
    win = _clip(od.shape[:2], int(round(cy)) - half, int(round(cx)) - half, *alpha.shape)
    if win is not None:
        a = alpha[win[1]][..., None]
        od[win[0]] = od[win[0]] * (1 - a) + a * colour
    return win


def _draw_particles(layout: SmearLayout, od: np.ndarray, x0: int, y0: int) -> None:
    h, w = od.shape[:2]
    for px, py, r in layout.particles:
        if px + r < x0 or px - r > x0 + w or py + r < y0 or py - r > y0 + h:
            continue
        ys, xs = np.mgrid[max(0, int(py - r - y0)):min(h, int(py + r - y0) + 1),
                          max(0, int(px - r - x0)):min(w, int(px + r - x0) + 1)]
        angle = np.arctan2(ys + y0 - py, xs + x0 - px)
        edge = r * (0.85 + 0.1 * np.sin(3 * angle + px) + 0.05 * np.sin(7 * angle + py))  # lumpy outline
        alpha = np.clip((edge - np.hypot(ys + y0 - py, xs + x0 - px)) / 2 + 0.5, 0, 1)[..., None]
        od[ys, xs] = od[ys, xs] * (1 - alpha) + alpha * to_od(_PARTICLE_T).astype(np.float32)


def _draw_cells(layout: SmearLayout, od: np.ndarray, mask: np.ndarray | None, cells: list[TrueCell],
                x0: int, y0: int) -> None:
    cyto, nuc = to_od(_CYTO_T), to_od(_NUC_T)
    for cell in cells:
        cx, cy = cell.x - x0, cell.y - y0
        _cover(od, _disc(cell.cell_um / 2 * layout.px_per_um)[0], cyto, cx, cy)
        alpha = _disc(cell.nucleus_um / 2 * layout.px_per_um)[0]
        win = _cover(od, alpha, nuc, cx + cell.nucleus_dx, cy + cell.nucleus_dy)
        if mask is not None and win is not None:
            mask[win[0]] |= alpha[win[1]] >= 0.5


def render_region(layout: SmearLayout, x: int, y: int, w: int, h: int,
                  with_mask: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The level-0 region as (h, w, 3) uint8 RGB, and its (h, w) uint8 nucleus mask (255) when asked."""
    if not _any_smear(layout, x, y, w, h) and not with_mask:  # bare glass: nothing to draw
        return np.broadcast_to(_GLASS_RGB, (h, w, 3)).copy(), None
    cells = cells_in(layout, (x, y, w, h), margin=NUCLEUS_UM[1] * CELL_RATIO[1] * layout.px_per_um)
    od = to_od(_GLASS_T)[None, None, :] + _red_cell_thickness(layout, x, y, w, h)[..., None] * to_od(_RBC_T)
    _draw_particles(layout, od, x, y)
    mask = np.zeros((h, w), bool) if with_mask else None
    _draw_cells(layout, od, mask, cells, x, y)
    np.exp(-od, out=od)
    od *= 255
    od += 0.5
    rgb = od.astype(np.uint8)  # (h, w, 3)
    return rgb, (mask.astype(np.uint8) * 255 if mask is not None else None)


# --- writing a pyramidal TIFF ---------------------------------------------------------------------

def _level_sizes(width: int, height: int, factor: int, min_side: int) -> list[tuple[int, int]]:
    sizes = [(width, height)]
    while max(sizes[-1]) // factor >= min_side:
        sizes.append((sizes[-1][0] // factor, sizes[-1][1] // factor))
    return sizes


def _tile_grid(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    return [(x, y) for y in range(0, height, tile) for x in range(0, width, tile)]


def _render_tile(job: tuple[SmearLayout, int, int, int]) -> np.ndarray:
    layout, x, y, tile = job
    return render_region(layout, x, y, tile, tile)[0]


def _level0_tiles(layout: SmearLayout, tile: int, reduced: np.ndarray, factor: int, workers: int,
                  progress: _Progress | None) -> Iterator[np.ndarray]:
    """Render level 0 tile by tile (in `workers` processes), filling `reduced` (the next level) on the way."""
    grid = _tile_grid(layout.width, layout.height, tile)
    jobs = ((layout, x, y, tile) for x, y in grid)
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers))
            tiles = pool.imap(_render_tile, jobs, chunksize=8)
        else:
            tiles = map(_render_tile, jobs)
        for done, ((x, y), rgb) in enumerate(zip(grid, tiles), start=1):
            small = _block_mean(rgb, factor)
            view = reduced[y // factor:(y + tile) // factor, x // factor:(x + tile) // factor]
            view[...] = small[:view.shape[0], :view.shape[1]]
            if progress is not None:
                progress(done, len(grid), "level 0")
            yield rgb


def _block_mean(rgb: np.ndarray, factor: int) -> np.ndarray:
    """(h/f, w/f, 3) uint8 means of f x f blocks (truncated); strided sums are 10x faster than reshape().mean()."""
    h, w = rgb.shape[0] // factor * factor, rgb.shape[1] // factor * factor
    wide = rgb[:h, :w].astype(np.uint16)
    rows = sum(wide[k::factor] for k in range(factor))
    return (sum(rows[:, k::factor] for k in range(factor)) // (factor * factor)).astype(np.uint8)


def _shrink(level: np.ndarray, factor: int, rows: int = 1024) -> np.ndarray:
    """The next pyramid level of a (possibly memory-mapped) level, a strip of rows at a time."""
    return np.concatenate([_block_mean(np.asarray(level[y:y + rows]), factor)
                           for y in range(0, level.shape[0] // factor * factor, rows)])


def _array_tiles(level: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    height, width = level.shape[:2]
    for x, y in _tile_grid(width, height, tile):
        out = np.full((tile, tile, 3), 255, np.uint8)
        part = level[y:y + tile, x:x + tile]
        out[:part.shape[0], :part.shape[1]] = part
        yield out


def write_slide(path: Path, layout: SmearLayout, tile: int = 512, factor: int = 4, resolution: bool = True,
                workers: int = 1, progress: _Progress | None = None) -> Path:
    """Write the smear as a tiled, deflate-compressed pyramidal TIFF (levels 1, 4, 16, ... as Aperio scans).

    `resolution=False` leaves out the resolution tags, as some scanners' exports do.
    """
    if tile % 16 or tile % factor:
        raise ValueError(f"tile {tile} must be a multiple of 16 and of the level factor {factor}")
    sizes = _level_sizes(layout.width, layout.height, factor, min_side=512)
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch, tifffile.TiffWriter(path, bigtiff=True) as tiff:
        w1, h1 = sizes[1] if len(sizes) > 1 else (layout.width // factor, layout.height // factor)
        reduced = np.memmap(Path(scratch) / "level1.raw", np.uint8, "w+", shape=(max(h1, 1), max(w1, 1), 3))
        _write_level(tiff, _level0_tiles(layout, tile, reduced, factor, workers, progress), sizes[0], tile, layout, 1,
                     resolution)
        level = reduced
        for index, size in enumerate(sizes[1:], start=1):
            _write_level(tiff, _array_tiles(level, tile), size, tile, layout, factor ** index, resolution)
            level = _shrink(level, factor)
        del reduced
    return path


def _write_level(tiff: tifffile.TiffWriter, tiles: Iterator[np.ndarray], size: tuple[int, int], tile: int,
                 layout: SmearLayout, downsample: int, resolution: bool) -> None:
    width, height = size
    per_cm = 1e4 / (layout.um_per_px * downsample)
    tags = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"} if resolution else {}
    description = "mdsdys synthetic smear (not patient data)" if downsample == 1 else None
    tiff.write(tiles, shape=(height, width, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
               compression="zlib", compressionargs={"level": 1}, subfiletype=0 if downsample == 1 else 1,
               description=description, metadata=None, **tags)
