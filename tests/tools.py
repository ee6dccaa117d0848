"""Real external tools the tests run against: required in CI, skipped elsewhere with a hint."""

from __future__ import annotations

import os
import shutil

import pytest


def require(binary: str, install: str) -> str:
    """The path of ``binary``; in CI (``CI`` set) a missing one fails, elsewhere it skips."""
    path = shutil.which(binary)
    if path is not None:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{binary} is required in CI but not installed ({install})")
    pytest.skip(f"{binary} not installed: {install}")
