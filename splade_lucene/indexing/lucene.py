"""Lucene access: readers on an index in this process's JVM (statistics, document frequencies,
the external doc ids), and Anserini's indexer in a child JVM. Everything that reads or writes Lucene
files goes through here; :mod:`splade_lucene.indexing.impacts` and :mod:`splade_lucene.indexing.build` build on it."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from ..core import java
from ..core.atomic import mount_point
from ..core.errors import DiskFullError
from ..core.faults import fault_point
from ..formats.metadata import IndexBuildError

# External doc ids in Lucene docid order (a JSON list), so a search maps hits to ids without loading
# each hit's stored fields.
DOCIDS_FILE = "docids.json"
_DOCID_PAGE = 10_000


@contextmanager
def lucene_reader(index_dir: str | Path):
    """A Lucene DirectoryReader on the index, in this process's JVM, closed on exit."""
    java.ensure_jvm()
    from jnius import autoclass

    paths = autoclass("java.nio.file.Paths")
    directory = autoclass("org.apache.lucene.store.FSDirectory").open(paths.get(str(Path(index_dir).resolve())))
    reader = autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
    try:
        yield reader
    finally:
        reader.close()
        directory.close()


def lucene_stats(index_dir: str | Path, field: str = "contents") -> dict:
    """Document count and term statistics read from the Lucene index in this process."""
    java.ensure_jvm()  # before the first jnius import
    from jnius import autoclass, cast

    with lucene_reader(index_dir) as reader:
        terms = autoclass("org.apache.lucene.index.MultiTerms").getTerms(
            cast("org.apache.lucene.index.IndexReader", reader), field)
        return {
            "documents": int(reader.numDocs()),
            "unique_terms": _term_count(terms),
            "postings": int(terms.getSumDocFreq()) if terms is not None else 0,
            "total_impact": int(terms.getSumTotalTermFreq()) if terms is not None else 0,
        }


def _term_count(terms) -> int:
    """The number of distinct terms of a field (Lucene answers -1 over several segments: then they are
    counted, one step a term)."""
    if terms is None:
        return 0
    size = int(terms.size())
    if size >= 0:
        return size
    it, size = terms.iterator(), 0
    while it.next() is not None:
        size += 1
    return size


def document_frequencies(index_dir: str | Path, terms, field: str = "contents") -> dict[str, int]:
    """Lucene document frequency of each term (0 where absent)."""
    java.ensure_jvm()  # before the first jnius import
    from jnius import autoclass

    term_cls = autoclass("org.apache.lucene.index.Term")
    with lucene_reader(index_dir) as reader:
        return {t: int(reader.docFreq(term_cls(field, t))) for t in terms}


def field_terms(reader, field: str = "contents") -> dict[str, tuple[int, int]]:
    """{term: (document frequency, total term frequency)} of a field, read from an open reader."""
    from jnius import autoclass, cast

    terms = autoclass("org.apache.lucene.index.MultiTerms").getTerms(
        cast("org.apache.lucene.index.IndexReader", reader), field)
    out: dict[str, tuple[int, int]] = {}
    if terms is None:
        return out
    it = terms.iterator()
    while True:
        term = it.next()
        if term is None:
            return out
        out[term.utf8ToString()] = (int(it.docFreq()), int(it.totalTermFreq()))


def extract_docids(index_dir: str | Path, reader=None) -> list[str]:
    """Every document's external id, in Lucene docid order, read from the index's stored ``id`` field
    in pages of :data:`_DOCID_PAGE` documents (one JNI round trip per page). ``reader``: an open
    Lucene reader on the index (else one is opened)."""
    if reader is None:
        with lucene_reader(index_dir) as opened:
            return extract_docids(index_dir, opened)
    mapper = java.json_mapper()
    from jnius import autoclass, cast

    searcher = autoclass("org.apache.lucene.search.IndexSearcher")(cast("org.apache.lucene.index.IndexReader", reader))
    query = autoclass("org.apache.lucene.search.MatchAllDocsQuery")()
    scored_docs = autoclass("io.anserini.search.ScoredDocs")
    ids: list[str | None] = [None] * int(reader.maxDoc())
    after = None
    while True:
        page = (searcher.search(query, _DOCID_PAGE) if after is None
                else searcher.searchAfter(after, query, _DOCID_PAGE))
        docs = page.scoreDocs
        if not docs:
            break
        found = json.loads(mapper.writeValueAsString(scored_docs.fromTopDocs(page, searcher)))
        for lucene_docid, docid in zip(found["lucene_docids"], found["docids"]):
            ids[lucene_docid] = docid
        after = docs[-1]
    # the pages left garbage in this process's JVM: a full collection gives its heap back (G1 shrinks
    # after one), so it does not sit beside the impact table built next (measured: 1.1 GB at 1M documents)
    autoclass("java.lang.System").gc()
    if any(i is None for i in ids):
        raise IndexBuildError(f"{index_dir}: some Lucene documents have no stored id")
    return ids  # type: ignore[return-value]


def docid_table(index_dir: str | Path, reader=None) -> list[str]:
    """External ids by Lucene docid: from :data:`DOCIDS_FILE` when the index has one that fits it
    (indexes built by this package do), else read from the index. ``reader``: an open Lucene reader
    on the index (else one is opened)."""
    if reader is None:
        with lucene_reader(index_dir) as opened:
            return docid_table(index_dir, opened)
    path = Path(index_dir) / DOCIDS_FILE
    if path.is_file():
        ids = json.loads(path.read_text(encoding="utf-8"))
        if len(ids) == int(reader.maxDoc()):
            return ids
    return extract_docids(index_dir, reader)


def package_versions() -> dict:
    import importlib.metadata as md

    versions = {"python": sys.version.split()[0], "anserini": java.anserini_version(), "java": java.java_version()}
    for name in ("splade-lucene", "pyserini", "torch", "transformers"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return versions


def run_indexer(cmd: list[str], expected: int, *, quiet: bool, where: str | Path = "the index") -> None:
    """Run Anserini in a child JVM, showing a progress bar from its log, and fail loudly."""
    from tqdm import tqdm

    log: list[str] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=False, preexec_fn=_die_with_parent)
    with tqdm(total=expected, desc="index", unit="doc", disable=quiet) as bar:
        try:
            for line in proc.stdout:
                log.append(line.rstrip())
                if len(log) == 1:
                    fault_point("index.running")
                done = _indexed_count(line)
                if done is not None:
                    bar.update(max(0, min(done, expected) - bar.n))
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        rc = proc.wait()
        if rc == 0:
            bar.update(expected - bar.n)
    if rc != 0:
        if any("No space left on device" in line for line in log):
            raise DiskFullError(errno.ENOSPC, f"no space left on {mount_point(where)} while writing the index {where} "
                                "(Anserini's indexer)")
        tail = "\n".join(log[-20:])
        raise IndexBuildError(f"Anserini's indexer failed (exit {rc}):\n{tail}")


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to kill it when this process dies, so that a build killed
    mid-way (even by SIGKILL) leaves no JVM behind. Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _indexed_count(line: str) -> int | None:
    # Anserini logs e.g. "... 12.34% of files completed, 5,000 documents indexed"
    marker = " documents indexed"
    if marker not in line:
        return None
    head = line.split(marker)[0].rsplit(" ", 1)[-1].replace(",", "")
    return int(head) if head.isdigit() else None
