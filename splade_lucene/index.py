"""Building Lucene impact indexes with Anserini, and the metadata that travels with them.

An index is built by Anserini's ``IndexCollection`` in a child JVM with
``-generator DefaultLuceneDocumentGenerator -impact -pretokenized`` (without ``-pretokenized`` the
English analyzer would stem and stop WordPiece terms). The build goes into a temporary folder beside
the target and is renamed into place only after the Lucene document count has been checked against
the collection's, so a failed or killed build never leaves a partial index at the target.

Beside the Lucene files, :data:`METADATA_FILE` records how the index was made: model (path and
sha256 of its weights), scales, max lengths, pooling, document counts, tool versions and the exact
Anserini command. :func:`check_compatible` refuses a query encoder that differs from it.
:data:`DOCIDS_FILE` lists the external ids in Lucene docid order, for fast searching.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import _java
from .atomic import move_into_place
from .collection import collection_files
from .errors import NotFoundError, OutputExistsError, SettingError, SpladeLuceneError

METADATA_FILE = "splade_lucene.json"
# External doc ids in Lucene docid order (a JSON list), so a search maps hits to ids without loading
# each hit's stored fields.
DOCIDS_FILE = "docids.json"
_DOCID_PAGE = 10_000
COLLECTION_METADATA_FILE = "collection.meta"
DEFAULT_INDEX_ROOT = Path("indexes")
_BUILDING = ".building-"


class IndexBuildError(SpladeLuceneError, RuntimeError):
    """An index that cannot be built or opened as asked."""


class IncompatibleIndexError(IndexBuildError):
    """The index was built with another model or scale than the one asked for."""


def read_collection_metadata(collection: str | Path) -> dict:
    path = Path(collection) / COLLECTION_METADATA_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def read_metadata(index_dir: str | Path) -> dict:
    path = Path(index_dir) / METADATA_FILE
    if not path.is_file():
        raise IndexBuildError(f"{index_dir} has no {METADATA_FILE}: it was not built by splade-lucene "
                          "(use Pyserini's LuceneImpactSearcher for foreign indexes)")
    return json.loads(path.read_text())


def default_index_dir(collection: str | Path) -> Path:
    """``indexes/NAME`` where NAME is the collection folder's name."""
    return DEFAULT_INDEX_ROOT / Path(collection).resolve().name


def anserini_command(collection: str | Path, index_dir: str | Path, *, fmt: str, threads: int) -> list[str]:
    anserini_collection = {"vector": "JsonVectorCollection", "pseudo": "JsonCollection"}[fmt]
    return [
        "io.anserini.index.IndexCollection",
        "-collection", anserini_collection,
        "-input", str(collection),
        "-index", str(index_dir),
        "-generator", "DefaultLuceneDocumentGenerator",
        "-impact", "-pretokenized",
        "-threads", str(threads),
    ]


@contextmanager
def _lucene_reader(index_dir: str | Path):
    """A Lucene DirectoryReader on the index, in this process's JVM, closed on exit."""
    _java.ensure_jvm()
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
    _java.ensure_jvm()  # before the first jnius import
    from jnius import autoclass, cast

    with _lucene_reader(index_dir) as reader:
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
    _java.ensure_jvm()  # before the first jnius import
    from jnius import autoclass

    term_cls = autoclass("org.apache.lucene.index.Term")
    with _lucene_reader(index_dir) as reader:
        return {t: int(reader.docFreq(term_cls(field, t))) for t in terms}


def extract_docids(index_dir: str | Path, reader=None) -> list[str]:
    """Every document's external id, in Lucene docid order, read from the index's stored ``id`` field
    in pages of :data:`_DOCID_PAGE` documents (one JNI round trip per page). ``reader``: an open
    Lucene reader on the index (else one is opened)."""
    if reader is None:
        with _lucene_reader(index_dir) as opened:
            return extract_docids(index_dir, opened)
    mapper = _java.json_mapper()
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
        with _lucene_reader(index_dir) as opened:
            return docid_table(index_dir, opened)
    path = Path(index_dir) / DOCIDS_FILE
    if path.is_file():
        ids = json.loads(path.read_text(encoding="utf-8"))
        if len(ids) == int(reader.maxDoc()):
            return ids
    return extract_docids(index_dir, reader)


def _clean_stale_builds(target: Path) -> None:
    """Remove temporary folders left by builds of this target whose process is gone."""
    for tmp in target.parent.glob(f"{target.name}{_BUILDING}*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and _pid_alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def package_versions() -> dict:
    import importlib.metadata as md

    versions = {"python": sys.version.split()[0], "anserini": _java.anserini_version(), "java": _java.java_version()}
    for name in ("splade-lucene", "pyserini", "torch", "transformers"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return versions


@dataclass
class BuildResult:
    index_dir: Path
    documents: int
    seconds: float
    metadata: dict


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"I/N"`` (or ``(I, N)``) as (I, N) with 0 <= I < N; None stays None."""
    if shard is None:
        return None
    try:
        i, n = (int(x) for x in shard.split("/")) if isinstance(shard, str) else (int(shard[0]), int(shard[1]))
    except (ValueError, TypeError, IndexError):
        raise SettingError(f"shard must be I/N (part files I, I+N, I+2N, ...), not {shard!r}") from None
    if not 0 <= i < n:
        raise SettingError(f"shard I/N needs 0 <= I < N, not {i}/{n}")
    return i, n


def build_index(collection: str | Path, index_dir: str | Path | None = None, *, threads: int = 1,
                overwrite: bool = False, quiet: bool = False, impact_table: bool = True,
                shard: str | tuple[int, int] | None = None) -> BuildResult:
    """Build a Lucene impact index from a collection written by :mod:`splade_lucene.encode`'s
    pipeline (or any JsonVectorCollection folder), atomically, and check its document count.
    ``impact_table``: also write the in-memory search table (:mod:`splade_lucene.impacts`), checked
    against the finished index. ``shard="I/N"``: index only the part files I, I+N, I+2N, ... (in
    name order), one of N shard indexes that :func:`merge_indexes` joins into one."""
    collection = Path(collection)
    if not collection.is_dir():
        raise NotFoundError(f"collection folder {collection} does not exist")
    files = collection_files(collection)
    if not files:
        raise IndexBuildError(f"{collection} holds no .jsonl collection files")
    shard = parse_shard(shard)
    if shard is not None:
        files = files[shard[0]::shard[1]]
        if not files:
            raise IndexBuildError(f"shard {shard[0]}/{shard[1]} of {collection} holds no part file "
                                  f"(the collection has {len(collection_files(collection))})")
    meta = read_collection_metadata(collection)
    fmt = meta.get("format") or _sniff_format(files[0])
    expected = meta.get("documents") if shard is None else None
    if expected is None:
        expected = sum(1 for f in files for line in open(f, encoding="utf-8") if line.strip())
    target = Path(index_dir) if index_dir is not None else default_index_dir(collection)
    if threads < 1:
        raise SettingError(f"threads must be at least 1, not {threads}")
    if target.exists() and not overwrite:
        raise OutputExistsError(f"index {target} already exists; pass --overwrite (overwrite=True) to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_builds(target)
    tmp = target.parent / f"{target.name}{_BUILDING}{os.getpid()}"
    source = collection
    if shard is not None:  # Anserini reads a folder: one of links to the shard's part files
        source = target.parent / f"{target.name}{_BUILDING}links-{os.getpid()}"
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir()
        for f in files:
            (source / f.name).symlink_to(f.resolve())
    try:
        return _build(collection, source, files, target, tmp, meta, fmt, expected, threads=threads, quiet=quiet,
                      impact_table=impact_table, shard=shard)
    finally:
        if source != collection:
            shutil.rmtree(source, ignore_errors=True)


def _build(collection: Path, source: Path, files: list[Path], target: Path, tmp: Path, meta: dict, fmt: str,
           expected: int, *, threads: int, quiet: bool, impact_table: bool, shard) -> BuildResult:
    args = anserini_command(source.resolve(), tmp.resolve(), fmt=fmt, threads=threads)
    java = _java.java_executable()
    _java.configure_environment()
    cmd = [java, "-cp", str(_java.anserini_jar()), *args]
    start = time.perf_counter()
    try:
        _run_indexer(cmd, expected, quiet=quiet)
        stats = lucene_stats(tmp)
        if stats["documents"] != expected:
            raise IndexBuildError(f"Anserini indexed {stats['documents']} documents but the collection {collection} "
                              f"has {expected}; the index was not kept")
        metadata = {
            # a shard's counts are its own: the collection's totals are left out
            **{k: v for k, v in meta.items()
               if k != "documents" and (shard is None or k not in ("empty_documents", "truncated_documents"))},
            "format": fmt,
            "documents": stats["documents"],
            "index_stats": stats,
            "collection": str(collection),
            "anserini_command": ["java", "-cp", _java.anserini_jar().name, *anserini_command(
                source if shard is None else "<links to collection_files>", target, fmt=fmt, threads=threads)],
            "versions": package_versions(),
        }
        if shard is not None:
            metadata["shard"] = f"{shard[0]}/{shard[1]}"
            metadata["collection_files"] = [str(collection / f.name) for f in files]
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        (tmp / DOCIDS_FILE).write_text(json.dumps(extract_docids(tmp), ensure_ascii=False), encoding="utf-8")
        if impact_table:
            from .impacts import write_impact_table

            write_impact_table(tmp, source)
        move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(target, stats["documents"], time.perf_counter() - start, metadata)


def _sniff_format(path: Path) -> str:
    with open(path, encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    return "vector" if "vector" in first else "pseudo"


def _run_indexer(cmd: list[str], expected: int, *, quiet: bool) -> None:
    """Run Anserini in a child JVM, showing a progress bar from its log, and fail loudly."""
    from tqdm import tqdm

    log: list[str] = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=False, preexec_fn=_die_with_parent)
    with tqdm(total=expected, desc="index", unit="doc", disable=quiet) as bar:
        try:
            for line in proc.stdout:
                log.append(line.rstrip())
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


def check_compatible(metadata: dict, *, model_sha256: str | None, model: str, scale: float) -> None:
    """Refuse a query encoder whose model or scale differs from the one the index was built for."""
    index_model = metadata.get("query_model", metadata.get("model"))
    index_sha = metadata.get("query_model_sha256", metadata.get("model_sha256"))
    if index_sha is None or model_sha256 is None:
        same = index_model == model
    else:
        same = index_sha == model_sha256
    if not same:
        def short(h):
            return f" (sha256 {h[:12]})" if h else ""
        raise IncompatibleIndexError(
            f"the index was built for query model {index_model}{short(index_sha)} but the query encoder uses "
            f"{model}{short(model_sha256)}")
    index_scale = metadata.get("query_scale", metadata.get("scale"))
    if index_scale is not None and float(index_scale) != float(scale):
        raise IncompatibleIndexError(
            f"the index expects query scale {index_scale} but the query encoder uses scale {scale}")


# Settings that must agree between the parts of a merged index: its vectors and queries mean the
# same only where these do.
_MERGE_KEYS = ("model_sha256", "query_model_sha256", "model", "query_model", "scale", "query_scale", "max_length",
               "query_max_length", "stride", "pooling", "dtype", "format", "doc_top_k", "doc_min_weight",
               "query_top_k", "query_min_weight")


def table_sources(metadata: dict) -> list[str]:
    """The collection folders or part files an index's documents were written from."""
    if "parts" in metadata:
        return [s for part in metadata["parts"] for s in part["sources"]]
    return list(metadata.get("collection_files") or [metadata["collection"]])


def merge_indexes(indexes, index_dir: str | Path, *, overwrite: bool = False, segments: int | None = None,
                  impact_table: bool = True, quiet: bool = False) -> BuildResult:
    """Merge impact indexes built by :func:`build_index` (one per shard: ``shard="I/N"``, or built
    from separate collections, on any machine) into one Lucene index with Lucene's own
    ``IndexWriter.addIndexes``, atomically. The parts must share the model, scales, lengths, pooling
    and pruning, and no document id may be in two of them. ``segments``: then force-merge to at most
    that many segments (fewer segments search a little faster; the merge costs time). The merged
    index's metadata lists every part; its impact table is written from the parts' collections
    (where they are gone, the index is kept without one and searches go through Lucene).

    Documents keep their order (the first part's, then the second's, ...); scores do not depend on
    segments, so searches give the same results as an index built in one go."""
    parts = [Path(p) for p in indexes]
    if not parts:
        raise SettingError("merge needs at least one index")
    if len({p.resolve() for p in parts}) != len(parts):
        raise SettingError("an index is named twice among the parts")
    if segments is not None and segments < 1:
        raise SettingError(f"segments must be at least 1, not {segments}")
    metas = []
    for p in parts:
        if not p.is_dir():
            raise NotFoundError(f"index {p} does not exist")
        metas.append(read_metadata(p))
    for key in _MERGE_KEYS:
        values = {json.dumps(m.get(key)) for m in metas}
        if len(values) > 1:
            shown = ", ".join(f"{p}: {m.get(key)!r}" for p, m in zip(parts, metas))
            raise IncompatibleIndexError(f"the parts differ in {key} ({shown}); only indexes of the same encoder "
                                         "and settings can be merged")
    target = Path(index_dir)
    if any(target.resolve() == p.resolve() for p in parts):
        raise SettingError(f"the merged index {target} cannot be one of its parts")
    if target.exists() and not overwrite:
        raise OutputExistsError(f"index {target} already exists; pass --overwrite (overwrite=True) to replace it")
    start = time.perf_counter()
    seen: dict[str, Path] = {}
    for p in parts:
        for docid in docid_table(p):
            if docid in seen:
                raise IndexBuildError(f"document {docid!r} is in both {seen[docid]} and {p}; merged indexes must "
                                      "not share documents")
            seen[docid] = p
    expected = len(seen)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_builds(target)
    tmp = target.parent / f"{target.name}{_BUILDING}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _add_indexes(tmp, parts, segments)
        stats = lucene_stats(tmp)
        if stats["documents"] != expected:
            raise IndexBuildError(f"the merged index holds {stats['documents']} documents, not the parts' {expected}")
        metadata = {
            **{k: metas[0].get(k) for k in _MERGE_KEYS},
            # where every part comes from the same collection and corpus (shards), they are the index's
            **{k: metas[0].get(k) if len({m.get(k) for m in metas}) == 1 else None for k in ("collection", "corpus")},
            "documents": stats["documents"],
            "index_stats": stats,
            "merged_with": "org.apache.lucene.index.IndexWriter.addIndexes"
                           + (f", forceMerge({segments})" if segments else ""),
            "parts": [{"index": str(p), "documents": m["documents"], "shard": m.get("shard"),
                       "collection": m.get("collection"), "sources": table_sources(m),
                       "index_stats": m.get("index_stats")} for p, m in zip(parts, metas)],
            "versions": package_versions(),
        }
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        (tmp / DOCIDS_FILE).write_text(json.dumps(extract_docids(tmp), ensure_ascii=False), encoding="utf-8")
        if impact_table:
            sources = table_sources(metadata)
            missing = [s for s in sources if not Path(s).exists()]
            if missing:
                import warnings

                warnings.warn(f"no impact table for {target}: {missing[0]} (of the parts' collections) is gone; "
                              "searches will go through Lucene", stacklevel=2)
            else:
                from .impacts import write_impact_table

                write_impact_table(tmp, sources)
        move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not quiet:
        print(f"merged {len(parts)} indexes ({expected} documents) into {target}", file=sys.stderr)
    return BuildResult(target, expected, time.perf_counter() - start, metadata)


def _add_indexes(folder: Path, parts: list[Path], segments: int | None) -> None:
    """Lucene: a new index in ``folder`` holding the segments of ``parts``, in order."""
    _java.ensure_jvm()
    from jnius import autoclass, cast

    paths = autoclass("java.nio.file.Paths")
    fs = autoclass("org.apache.lucene.store.FSDirectory")
    config = autoclass("org.apache.lucene.index.IndexWriterConfig")(
        autoclass("org.apache.lucene.analysis.core.WhitespaceAnalyzer")())
    config.setOpenMode(autoclass("org.apache.lucene.index.IndexWriterConfig$OpenMode").CREATE)
    config.setUseCompoundFile(False)  # as Anserini's IndexCollection writes them
    out = fs.open(paths.get(str(folder.resolve())))
    inputs = [fs.open(paths.get(str(p.resolve()))) for p in parts]
    writer = autoclass("org.apache.lucene.index.IndexWriter")(out, config)
    try:
        writer.addIndexes(*[cast("org.apache.lucene.store.Directory", d) for d in inputs])
        if segments:
            writer.forceMerge(segments)
        writer.commit()
    finally:
        writer.close()
        for d in inputs:
            d.close()
        out.close()
