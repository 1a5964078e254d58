"""Where the app keeps its files, read once from environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Paths and limits for one installation of the app."""

    home: Path  # MDSDYS_HOME: the folder that holds labels.db and models/ by default
    db_path: Path  # MDSDYS_DB: the SQLite label store
    models_dir: Path  # MDSDYS_MODELS: versioned model checkpoints
    demo: bool = False  # MDSDYS_DEMO=1: show the demo accounts on the login page
    # A 640x480 field is ~100 kB and a zip of a whole slide's patches some hundred MB;
    # 1 GB keeps a single upload well below this machine's memory.
    max_upload_mb: int = 1024
    # 40 MP admits a 6000x6000 camera field and refuses decompression bombs
    # such as the 20000x20000 image of issue 8.
    max_image_pixels: int = 40_000_000


def load_settings() -> Settings:
    """Read the settings from MDSDYS_* environment variables, with defaults next to the repository."""
    home = Path(os.environ.get("MDSDYS_HOME", REPO_ROOT)).expanduser()
    return Settings(
        home=home,
        db_path=Path(os.environ.get("MDSDYS_DB", home / "labels.db")).expanduser(),
        models_dir=Path(os.environ.get("MDSDYS_MODELS", home / "models")).expanduser(),
        demo=os.environ.get("MDSDYS_DEMO", "") == "1",
        max_upload_mb=int(os.environ.get("MDSDYS_MAX_UPLOAD_MB", "1024")),
        max_image_pixels=int(os.environ.get("MDSDYS_MAX_IMAGE_PIXELS", "40000000")),
    )
