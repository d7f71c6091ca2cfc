"""Where a sweep's analysis lives: one folder per sweep, next to its trials.

``distillery sweep`` (at its end) and ``distillery analyze`` (run later by hand) must write the
same place, or a user ends up with two copies of a report and does not know which is current.
"""

from __future__ import annotations

from pathlib import Path


def analysis_dir(storage_path: str | Path, sweep_name: str) -> Path:
    """``<storage_path>/<sweep>/analysis`` (the trials are in ``<storage_path>/<sweep>/trials``)."""
    return Path(storage_path) / sweep_name / "analysis"
