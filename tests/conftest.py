"""Test-wide settings."""

from __future__ import annotations

import os

from hypothesis import settings

# CI replays the same examples every run (a failure there is reproducible, never a coin toss);
# elsewhere each run explores new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
