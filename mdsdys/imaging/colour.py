"""Stain colour in optical density: the one HED stain matrix both models' augmentation uses.

Array conventions: `rgb` (..., 3) float in [0, 1]; optical density `od = -log(rgb)`, per channel.
Torch-free (numpy), so pages and importers can use it without loading a model runtime.
"""

from __future__ import annotations

import numpy as np

# Ruifrok & Johnston (2001) stain vectors as scikit-image's rgb2hed uses them: rows are the optical
# densities of haematoxylin, eosin and DAB. Romanowsky stains (May-Grunwald-Giemsa, Wright-Giemsa)
# are not H&E, but these three directions still span how stain batches differ: a bluer or pinker
# smear, a darker or paler one (Tellez et al. 2018, "HED jitter").
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)
OD_FLOOR = 1.0 / 255  # transmittance floor: the darkest 8-bit value keeps log() finite
