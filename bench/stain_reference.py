"""The reference stain of mdsdys.imaging.stain.REFERENCE, recomputed from the PBC images (issue 13).

    python bench/stain_reference.py

Every PBC image (../shared/data/pbc, CellaVision DM96, May-Grünwald-Giemsa) is cut around its nucleus
at 64 px, as import cuts it; fit_stain fits them as one slide and the white point is set to pure
white. It prints the StainFit to paste into stain.py and how far the shipped REFERENCE is from it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mdsdys.imaging.stain import REFERENCE, fit_stain  # noqa: E402
from mdsdys.imaging.thumbnails import image_square  # noqa: E402
from mdsdys.ingest.importer import files_in_folder  # noqa: E402

PBC = REPO.parent / "shared" / "data" / "pbc"


def reference_fit(folder: Path = PBC):
    """fit_stain over every image of the folder, cut by the nucleus rule at 64 px, white set to 255."""
    squares = np.stack([image_square(f.read(), 64) for f in files_in_folder(folder)])
    return dataclasses.replace(fit_stain(squares), white=(255.0, 255.0, 255.0)), len(squares)


def main() -> int:
    if not PBC.is_dir():
        print(f"skipped: needs {PBC}")
        return 0
    fit, n = reference_fit()
    print(f"fit on {n} PBC cells:")
    print(f"  stains={tuple(tuple(round(x, 4) for x in v) for v in fit.stains)}")
    print(f"  max_density={tuple(round(x, 4) for x in fit.max_density)}")
    for c, q in enumerate(fit.quantiles or ()):
        print(f"  quantiles[{'RGB'[c]}]=({', '.join(f'{x:.4f}' for x in q)})")
    if REFERENCE.quantiles is not None and fit.quantiles is not None:
        gap = np.abs(np.array(REFERENCE.quantiles) - np.array(fit.quantiles)).max()
        print(f"largest difference from the shipped REFERENCE's quantiles: {gap:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
