"""Fixtures for the policy tests: a private copy of the example policies per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .policy_gen import EXAMPLES


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A copy of policies/ (with its golden tables) that a test may edit."""
    target = tmp_path / "policies"
    shutil.copytree(EXAMPLES, target)
    return target
