"""Where the official schemas are: ``shared/schemas`` beside the repository (or a worktree's parent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def schemas_dir() -> Path:
    """The nearest ``shared/schemas`` above the repository; the test fails naming where it looked."""
    for parent in REPO.parents:
        candidate = parent / "shared" / "schemas"
        if candidate.is_dir():
            return candidate
    pytest.fail(f"no shared/schemas above {REPO}: the official schemas live in ../shared/schemas beside the repository")
