"""The reference toolkits of the evaluation parity tests: present at the cited version, or the test fails on CI."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

import pytest

from codi2.evaluation.toolkits import TOOLKITS

#: installed without their declared dependencies (.ci/run), which include torchaudio
NO_DEPS = {"panns-inference", "audioldm-eval", "ssr-eval", "frechet-audio-distance"}


def require(distribution: str) -> None:
    """The reference must be installed at the version codi2's reports cite; on CI it must be."""
    try:
        installed = version(distribution)
    except PackageNotFoundError:
        flags = "--no-deps " if distribution in NO_DEPS else ""
        message = f"reference not installed: pip install {flags}{distribution}=={TOOLKITS[distribution]}"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it (.ci/run): parity must never be skipped there
        pytest.skip(message)
    assert installed == TOOLKITS[distribution], (
        f"{distribution} {installed} is installed, codi2.evaluation.toolkits cites {TOOLKITS[distribution]}")
