"""Sample data shipped with K2 (the real ASX DVN/MWR files used by `k2 demo --asx` and the tests)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def asx_sample_dir() -> Path:
    """Directory with trades/, quotes/ and reference-data/ of the ASX sample (see its FORMAT.md)."""
    return Path(str(resources.files(__package__).joinpath("asx")))
