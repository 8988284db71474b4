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


@pytest.fixture(scope="session")
def scifact_cli_experiment(datasets, tmp_path_factory):
    """`python -m splade_lucene experiment` on SciFact with the defaults, as a user runs it."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("experiment") / "scifact"
    proc = subprocess.run([sys.executable, "-m", "splade_lucene", "--quiet", "experiment",
                           "--dataset", str(datasets / "scifact"), "--output", str(out)],
                          capture_output=True, text=True, timeout=3600)
    return out, proc


@pytest.fixture(scope="session")
def reproduced(datasets, tmp_path_factory):
    """`splade-lucene reproduce` on every shipped experiment file, then `report`."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("reproduce")
    files = sorted(str(p) for p in (REPO / "scripts" / "experiments").glob("*.yaml"))
    env = {**os.environ, "SPLADE_LUCENE_DATA": str(datasets)}
    proc = subprocess.run([sys.executable, "-m", "splade_lucene", "--quiet", "reproduce", *files, "--output", str(out)],
                          capture_output=True, text=True, timeout=3600, env=env)
    report = subprocess.run([sys.executable, "-m", "splade_lucene", "report", "--output", str(out)],
                            capture_output=True, text=True, timeout=600)
    return out, proc, report
