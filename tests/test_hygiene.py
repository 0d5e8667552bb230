"""Lint, format and type checks run with the suite, so the README's one test
command (and CI) fails on them like on any broken behaviour."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

CHECKS = {
    "ruff check": ["ruff", "check", "."],
    "ruff format": ["ruff", "format", "--check", "."],
    "mypy strict (framework)": ["mypy", "--strict", "pipeline"],
    "mypy (stages, app, benchmarks)": ["mypy", "stages", "framechain", "benchmarks"],
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_static_check(name: str) -> None:
    """Each check's whole output is shown when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", *CHECKS[name]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
