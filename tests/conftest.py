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
    from splade_lucene.model import SpladeEncoder

    return SpladeEncoder()


@pytest.fixture(scope="session")
def cli_experiment(datasets, tmp_path_factory):
    """`python -m splade_lucene experiment` on Cranfield with the defaults, as a user runs it (its query
    and document ids are unrelated numberings: query hits kept). SciFact, the default dataset, runs
    with the same settings in `reproduced`."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("experiment") / "cranfield"
    proc = subprocess.run([sys.executable, "-m", "splade_lucene", "--quiet", "experiment", "--keep-query-hits",
                           "--dataset", str(datasets / "cranfield"), "--output", str(out)],
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


def read_vectors(folder: Path) -> dict[str, dict[str, int]]:
    import json

    from splade_lucene.collection import collection_files

    return {r["id"]: r["vector"] for f in collection_files(folder)
            for r in map(json.loads, f.read_text().splitlines())}


@pytest.fixture(scope="session")
def cranfield(datasets, encoder, tmp_path_factory):
    """Cranfield (1,400 documents, two of them empty) encoded with SPLADE-tiny, indexed from the
    JsonVectorCollection files and from the equivalent pseudo-documents, with its queries encoded."""
    import json

    from splade_lucene.collection import pseudo_record, read_queries
    from splade_lucene.encode import encode_corpus
    from splade_lucene.evaluate import read_qrels
    from splade_lucene.index import COLLECTION_METADATA_FILE, build_index
    from splade_lucene.search import QueryEncoder

    base = tmp_path_factory.mktemp("cranfield")
    folder = datasets / "cranfield"
    summary = encode_corpus(folder / "corpus.jsonl", base / "vector", encoder=encoder, progress=False)
    # The same vectors as pseudo-documents (what --format pseudo writes).
    vectors = read_vectors(base / "vector")
    (base / "pseudo").mkdir()
    with open(base / "pseudo" / "part-00000.jsonl", "w") as fh:
        for docid, terms in vectors.items():
            fh.write(json.dumps(pseudo_record(docid, terms)) + "\n")
    meta = json.loads((base / "vector" / COLLECTION_METADATA_FILE).read_text())
    (base / "pseudo" / COLLECTION_METADATA_FILE).write_text(json.dumps({**meta, "format": "pseudo"}))
    vector_index = build_index(base / "vector", base / "index-vector", quiet=True)
    pseudo_index = build_index(base / "pseudo", base / "index-pseudo", quiet=True)
    qrels = read_qrels(folder / "qrels" / "test.tsv")
    queries = read_queries(folder / "queries.jsonl")
    qenc = QueryEncoder(encoder=encoder)
    encoded = dict(zip([q for q, _ in queries], qenc.encode_batch([t for _, t in queries])))
    return {"base": base, "summary": summary, "vectors": vectors, "vector_index": vector_index.index_dir,
            "pseudo_index": pseudo_index.index_dir, "queries": queries, "encoded": encoded, "qrels": qrels,
            "query_encoder": qenc}


@pytest.fixture(scope="session")
def shards(cranfield, tmp_path_factory):
    """Cranfield's collection cut into 5 part files, indexed as 3 shards (parts 0+3, 1+4, 2)."""
    import shutil

    from splade_lucene.index import COLLECTION_METADATA_FILE, build_index

    base = tmp_path_factory.mktemp("shards")
    parts = base / "collection"
    parts.mkdir()
    source = cranfield["base"] / "vector"
    lines = (source / "part-00000.jsonl").read_text().splitlines(keepends=True)
    size = -(-len(lines) // 5)
    for number in range(5):
        (parts / f"part-{number:05d}.jsonl").write_text("".join(lines[number * size:(number + 1) * size]))
    shutil.copy(source / COLLECTION_METADATA_FILE, parts / COLLECTION_METADATA_FILE)
    indexes = [build_index(parts, base / f"shard-{i}", shard=f"{i}/3", quiet=True).index_dir for i in range(3)]
    return {"base": base, "collection": parts, "indexes": indexes, "lines": lines}
