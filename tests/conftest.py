"""Shared fixtures. Tests that need ../shared/datasets find it through $SPLADE_LUCENE_DATA or
../shared/datasets beside the checkout, and skip with the reason where neither exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import splade_lucene  # noqa: F401  (sets up Java before any pyserini import)

REPO = Path(__file__).resolve().parent.parent


def data_root() -> Path | None:
    if os.environ.get("SPLADE_LUCENE_DATA"):
        return Path(os.environ["SPLADE_LUCENE_DATA"])
    candidate = REPO.parent / "shared" / "datasets"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def datasets() -> Path:
    root = data_root()
    if root is None or not root.is_dir():
        pytest.skip("test collections not found: set SPLADE_LUCENE_DATA or place them at ../shared/datasets")
    return root


@pytest.fixture(scope="session")
def encoder():
    from splade_lucene.encode import SpladeEncoder

    return SpladeEncoder()
