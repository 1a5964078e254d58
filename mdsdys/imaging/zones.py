"""Finding a smear's reading zone at low power, as a hematologist does before switching to oil (issue 18).

A smear is read where it is a monolayer: red cells just touching, with a little glass between them, and
nucleated cells lying apart. Before it lies the thick zone (red cells piled up, no glass between them);
after it the feathered edge (cells sparse, broken, glass everywhere); marrow particles are dark clumps.

The finder works on a low-power copy of the slide (~2 µm per pixel, where a 7.5 µm red cell is ~4 px and
the glass between touching red cells still shows), cut into blocks of ~33 µm. For each block it measures:
- `gap`: the fraction of bare-glass pixels;
- `density`: the mean optical density of what is not nucleus (red cells), which piles up in the thick zone;
- `nuclear`: the fraction of pixels stained like a nucleus (they absorb red light, red cells do not).
Density is judged against the slide's own monolayer (its median over blocks with some glass between cells),
so a paler or darker stain moves the reference with it. Torch-free and OpenSlide-free: any source of
low-power chunks can feed it (mdsdys.ingest.wsi streams them from a scan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# A typical marrow nucleus (detect.TYPICAL_NUCLEUS_UM); turns nucleus-stained area into a count of cells.
TYPICAL_NUCLEUS_UM = 9.0


@dataclass(frozen=True)
class ZoneConfig:
    """How the reading zone is judged; the defaults were set on the generator's smears (mdsdys.demo.wsi_synth)."""

    analysis_um_per_px: float = 2.0  # a red cell ~4 px across: the glass between touching ones still shows
    field_um: float = 200.0          # one field: about what a 100x oil objective shows (field number 22 / 100)
    blocks_per_field: int = 6        # a field is 6 x 6 blocks (~33 µm, a few red cells across)
    glass_margin_od: float = 0.3     # a pixel this close to the glass's optical density (sum of RGB) is glass
    nucleus_od_red: float = 0.6      # red-channel OD above which a pixel is stained like a nucleus
    gap_range: tuple[float, float] = (0.08, 0.35)  # glass between cells in the monolayer; thick has ~0, edges more
    density_range: tuple[float, float] = (0.8, 1.25)  # x the slide's monolayer density: above = piled up
    particle_nuclear: float = 0.3    # a block this full of nucleus stain is a particle or a clump
    particle_margin_blocks: int = 1  # keep this many blocks away from a particle
    min_monolayer: float = 0.9       # fraction of a field's blocks that must look like monolayer
    target_cells: int = 500          # a differential count (DOMAIN.md): choose fields until this many are expected
    max_fields: int = 200

    def block_px(self) -> int:
        """Block side in analysis pixels."""
        return max(2, round(self.field_um / self.blocks_per_field / self.analysis_um_per_px))


@dataclass
class BlockMaps:
    """Per-block features of a whole slide at low power; (rows, cols) float32 maps, NaN where not yet seen."""

    gap: np.ndarray
    density: np.ndarray
    nuclear: np.ndarray
    block_level0: float  # level-0 px per block side

    @classmethod
    def empty(cls, level0_size: tuple[int, int], block_level0: float) -> BlockMaps:
        """Maps covering a (width, height) level-0 slide, every block unseen."""
        rows, cols = math.ceil(level0_size[1] / block_level0), math.ceil(level0_size[0] / block_level0)
        return cls(*(np.full((rows, cols), np.nan, np.float32) for _ in range(3)), block_level0)

    def put(self, row: int, col: int, features: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Write a chunk's block features with its top-left block at (row, col)."""
        for target, values in zip((self.gap, self.density, self.nuclear), features):
            view = target[row:row + values.shape[0], col:col + values.shape[1]]
            view[...] = values[:view.shape[0], :view.shape[1]]


@dataclass(frozen=True)
class FieldChoice:
    """A candidate field: its level-0 box, how well it reads, and how many nucleated cells it should hold."""

    box: tuple[int, int, int, int]  # (x, y, w, h) level-0 px
    score: float                    # higher reads better; 0 for a field a person added
    expected_cells: float
    monolayer: float                # fraction of its blocks that look like monolayer


# OD of each 8-bit value: a table lookup is ~4x faster than a log over a low-power chunk.
_OD = (-np.log(np.maximum(np.arange(256, dtype=np.float32), 1.0) / 255.0)).astype(np.float32)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 OD of an (H, W, 3) uint8 image (natural log, as mdsdys.demo draws)."""
    return _OD[rgb]


def glass_od(overview: np.ndarray) -> float:
    """The optical density (sum over RGB) of bare glass: the brightest few percent of the overview.

    A scan always holds some glass around the smear; capped so a scan that is all smear still works.
    """
    return float(min(np.percentile(optical_density(overview).sum(axis=2), 2), 0.45))


def block_features(rgb: np.ndarray, block: int, glass: float,
                   config: ZoneConfig = ZoneConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gap, density, nuclear) per block of an (H, W, 3) uint8 chunk at analysis resolution; partial blocks dropped."""
    od = optical_density(rgb)
    total = od[..., 0] + od[..., 1] + od[..., 2]
    nucleus = od[..., 0] > config.nucleus_od_red
    gap = total < glass + config.glass_margin_od
    rows, cols = rgb.shape[0] // block, rgb.shape[1] // block

    def mean(values: np.ndarray) -> np.ndarray:  # summing rows, then columns: 4x faster than .mean(axis=(1, 3))
        strips = values[:rows * block, :cols * block].reshape(rows, block, cols * block).sum(axis=1, dtype=np.float32)
        return strips.reshape(rows, cols, block).sum(axis=2) / (block * block)

    not_nucleus = mean(~nucleus)
    density = mean(np.where(nucleus, 0.0, total)) / np.maximum(not_nucleus, 1e-3)
    return (mean(gap).astype(np.float32), density.astype(np.float32), mean(nucleus).astype(np.float32))


def monolayer_blocks(maps: BlockMaps, config: ZoneConfig = ZoneConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(monolayer, particle) boolean block maps: blocks that read well, and blocks to keep away from."""
    gap, density, nuclear = (np.nan_to_num(m, nan=v) for m, v in ((maps.gap, 1.0), (maps.density, 0.0),
                                                                   (maps.nuclear, 0.0)))
    lo, hi = config.gap_range
    spread = (gap >= lo) & (gap <= 0.6)
    reference = float(np.median(density[spread])) if spread.any() else 1.0  # the slide's own single layer
    dlo, dhi = config.density_range
    particle = ndimage.binary_dilation(nuclear >= config.particle_nuclear,
                                       iterations=config.particle_margin_blocks)
    mono = (gap >= lo) & (gap <= hi) & (density >= dlo * reference) & (density <= dhi * reference) & ~particle
    return mono, particle


def score_fields(maps: BlockMaps, config: ZoneConfig = ZoneConfig()) -> list[FieldChoice]:
    """Every field-sized window that reads as monolayer, best first, on a half-field grid (they may overlap)."""
    mono, particle = monolayer_blocks(maps, config)
    n = config.blocks_per_field
    if mono.shape[0] < n or mono.shape[1] < n:
        return []
    fraction = _window_mean(mono.astype(np.float32), n)
    touches_particle = _window_mean(particle.astype(np.float32), n) > 0
    nuclear = _window_mean(np.nan_to_num(maps.nuclear, nan=0.0), n)
    gap = _window_mean(np.nan_to_num(maps.gap, nan=1.0), n)
    ideal_gap = sum(config.gap_range) / 2
    field_level0 = n * maps.block_level0
    step = max(1, n // 2)
    choices = []
    for row in range(0, fraction.shape[0], step):
        for col in range(0, fraction.shape[1], step):
            if fraction[row, col] < config.min_monolayer or touches_particle[row, col]:
                continue
            score = float(fraction[row, col] - abs(gap[row, col] - ideal_gap))
            box = (round(col * maps.block_level0), round(row * maps.block_level0), round(field_level0), round(field_level0))
            cells = expected_cells(float(nuclear[row, col]), config.field_um)
            choices.append(FieldChoice(box, score, cells, float(fraction[row, col])))
    return sorted(choices, key=lambda c: -c.score)


def _window_mean(values: np.ndarray, n: int) -> np.ndarray:
    """Mean over each n x n window, indexed by its top-left block: shape (rows - n + 1, cols - n + 1)."""
    summed = np.cumsum(np.cumsum(np.pad(values, ((1, 0), (1, 0))), axis=0), axis=1)
    window = summed[n:, n:] - summed[:-n, n:] - summed[n:, :-n] + summed[:-n, :-n]
    return window / (n * n)


def expected_cells(nuclear_fraction: float, field_um: float) -> float:
    """Nucleated cells a field should hold, from the fraction of its area stained like a nucleus."""
    return nuclear_fraction * field_um ** 2 / (math.pi * (TYPICAL_NUCLEUS_UM / 2) ** 2)


def choose_fields(candidates: list[FieldChoice], target_cells: int | None = None, n_fields: int | None = None,
                  max_fields: int = 200) -> list[FieldChoice]:
    """The best fields that do not overlap: n_fields of them, or as many as reach target_cells expected cells."""
    chosen: list[FieldChoice] = []
    total = 0.0
    limit = n_fields if n_fields is not None else max_fields
    for candidate in candidates:
        if len(chosen) >= limit or (n_fields is None and target_cells is not None and total >= target_cells):
            break
        if any(_overlap(candidate.box, c.box) for c in chosen):
            continue
        chosen.append(candidate)
        total += candidate.expected_cells
    return chosen


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def grid_fields(maps: BlockMaps, config: ZoneConfig = ZoneConfig()) -> list[FieldChoice]:
    """Non-overlapping field-sized windows over the smear (not bare glass), to add by hand; score = monolayer share."""
    mono, _ = monolayer_blocks(maps, config)
    n = config.blocks_per_field
    rows, cols = mono.shape[0] // n, mono.shape[1] // n
    if not rows or not cols:
        return []
    def per_field(values: np.ndarray) -> np.ndarray:
        return values[:rows * n, :cols * n].reshape(rows, n, cols, n).mean(axis=(1, 3))
    fraction = per_field(mono.astype(np.float32))
    glass = per_field(np.nan_to_num(maps.gap, nan=1.0)) > 0.9
    nuclear = per_field(np.nan_to_num(maps.nuclear, nan=0.0))
    side = round(n * maps.block_level0)
    return [FieldChoice((round(c * n * maps.block_level0), round(r * n * maps.block_level0), side, side),
                        float(fraction[r, c]), expected_cells(float(nuclear[r, c]), config.field_um),
                        float(fraction[r, c]))
            for r in range(rows) for c in range(cols) if not glass[r, c]]
