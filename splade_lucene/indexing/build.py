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
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import java
from ..core.atomic import move_into_place, naming_a_full_disk, output_lock, write_text
from ..core.errors import NotFoundError, OutputExistsError, SettingError
from ..core.faults import fault_point
from ..encoding.loading import read_sparse_head, resolve_model
from ..formats.collection import collection_files
from ..formats.metadata import (
    MATCHING_KEYS,
    METADATA_FILE,
    IncompatibleIndexError,
    IndexBuildError,
    read_collection_metadata,
    read_metadata,
    table_sources,
)
from .impacts import write_impact_table
from .lucene import (
    DOCIDS_FILE,
    docid_table,
    extract_docids,
    field_terms,
    lucene_reader,
    lucene_stats,
    package_versions,
    run_indexer,
)
from .query_table import FOLDER as QUERY_FOLDER
from .query_table import (
    QueryTableError,
    check_mode,
    idf_weights,
    model_query_mode,
    model_query_table,
    write_query_folder,
)

DEFAULT_INDEX_ROOT = Path("indexes")
_BUILDING = ".building-"


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
                shard: str | tuple[int, int] | None = None, query_mode: str | None = None,
                metadata: dict | None = None) -> BuildResult:
    """Build a Lucene impact index from a collection written by :mod:`splade_lucene.encoding.local`'s
    pipeline (or any JsonVectorCollection folder), atomically, and check its document count.
    ``impact_table``: also write the in-memory search table (:mod:`splade_lucene.indexing.impacts`), checked
    against the finished index. ``shard="I/N"``: index only the part files I, I+N, I+2N, ... (in
    name order), one of N shard indexes that :func:`merge_indexes` joins into one. ``query_mode``:
    ``full`` (queries through the model), ``idf`` or ``learned`` (inference-free queries from a table,
    :mod:`splade_lucene.indexing.query_table`); default: the mode the model was trained for (``full`` for any
    model not trained with ``--query-mode``). ``metadata``: the collection's metadata where the folder
    has none of its own (a foreign collection: :func:`splade_lucene.indexing.foreign.stated_metadata`)."""
    collection = Path(collection)
    if query_mode is not None:
        check_mode(query_mode)
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
    meta = read_collection_metadata(collection) if metadata is None else dict(metadata)
    fmt = meta.get("format") or _sniff_format(files[0])
    expected = meta.get("documents") if shard is None else None
    if expected is None:
        expected = sum(1 for f in files for line in open(f, encoding="utf-8") if line.strip())
    target = Path(index_dir) if index_dir is not None else default_index_dir(collection)
    with output_lock(target):
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
                          impact_table=impact_table, shard=shard, query_mode=query_mode)
        finally:
            if source != collection:
                shutil.rmtree(source, ignore_errors=True)


def _build(collection: Path, source: Path, files: list[Path], target: Path, tmp: Path, meta: dict, fmt: str,
           expected: int, *, threads: int, quiet: bool, impact_table: bool, shard,
           query_mode: str | None = None) -> BuildResult:
    args = anserini_command(source.resolve(), tmp.resolve(), fmt=fmt, threads=threads)
    java_bin = java.java_executable()
    java.configure_environment()
    cmd = [java_bin, "-cp", str(java.anserini_jar()), *args]
    start = time.perf_counter()
    with naming_a_full_disk(target):
        try:
            run_indexer(cmd, expected, quiet=quiet, where=target)
            fault_point("index.built")
            stats = lucene_stats(tmp)
            if stats["documents"] != expected:
                raise IndexBuildError(f"Anserini indexed {stats['documents']} documents but the collection "
                                      f"{collection} has {expected}; the index was not kept")
            metadata = {
                # a shard's counts are its own: the collection's totals are left out
                **{k: v for k, v in meta.items()
                   if k != "documents" and (shard is None or k not in ("empty_documents", "truncated_documents"))},
                "format": fmt,
                "documents": stats["documents"],
                "index_stats": stats,
                "collection": str(collection),
                "anserini_command": ["java", "-cp", java.anserini_jar().name, *anserini_command(
                    source if shard is None else "<links to collection_files>", target, fmt=fmt, threads=threads)],
                "versions": package_versions(),
            }
            if shard is not None:
                metadata["shard"] = f"{shard[0]}/{shard[1]}"
                metadata["collection_files"] = [str(collection / f.name) for f in files]
            metadata.update(write_query_table(tmp, metadata, query_mode))
            (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
            (tmp / DOCIDS_FILE).write_text(json.dumps(extract_docids(tmp), ensure_ascii=False), encoding="utf-8")
            if impact_table:
                write_impact_table(tmp, source)
            move_into_place(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return BuildResult(target, stats["documents"], time.perf_counter() - start, metadata)


def write_query_table(index_dir: Path, metadata: dict, query_mode: str | None, *,
                      folder: Path | None = None) -> dict:
    """Write the inference-free query folder of an index (``folder``, default ``INDEX/query-encoder``)
    for ``query_mode`` (None: the mode the collection's model was trained for) and return the
    metadata entries recording it."""
    model_path = metadata.get("model_path") or metadata.get("model")
    mode = query_mode
    if mode is None:
        mode = model_query_mode(model_path) if model_path and Path(model_path).is_dir() else "full"
    check_mode(mode)
    if mode == "full":
        return {"query_mode": "full"}
    from transformers import AutoTokenizer

    if not model_path:
        raise QueryTableError(f"query mode {mode!r} needs the collection's model (its tokenizer), and the "
                              "collection records none")
    path = resolve_model(model_path)[1]
    if mode == "learned":
        weights, source, tokenizer_path = model_query_table(path)
    else:
        tokenizer_path = read_sparse_head(path).masked_lm
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    except Exception as exc:
        raise QueryTableError(f"query mode {mode!r} needs the tokenizer of the collection's model {path}: "
                              f"{exc}") from None
    if mode == "idf":
        vocab = tokenizer.get_vocab()
        df = np.zeros(max(len(tokenizer), max(vocab.values()) + 1), dtype=np.int64)
        with lucene_reader(index_dir) as reader:
            n_docs = int(reader.numDocs())
            for term, (freq, _) in field_terms(reader).items():
                i = vocab.get(term)
                if i is not None:
                    df[i] = freq
        weights, source = idf_weights(df, n_docs), "index document frequencies"
        weights[sorted(set(tokenizer.all_special_ids))] = 0
    return write_query_folder(folder or index_dir / QUERY_FOLDER, tokenizer, weights, mode, source)


def set_query_mode(index_dir: str | Path, query_mode: str) -> dict:
    """Switch a built index to another query mode without rebuilding it: the query folder is written
    beside the old one and swapped in, then the metadata is rewritten atomically (searchers opened
    before keep the mode they read). Returns the new metadata."""
    index_dir = Path(index_dir)
    check_mode(query_mode)
    with output_lock(index_dir / METADATA_FILE, "file"):
        metadata = read_metadata(index_dir)
        tmp = index_dir / f".{QUERY_FOLDER}.writing"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            entries = write_query_table(index_dir, metadata, query_mode, folder=tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for key in ("query_mode", "query_table_sha256", "query_table_source"):
            metadata.pop(key, None)
        metadata.update(entries)
        if query_mode == "full":
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(index_dir / QUERY_FOLDER, ignore_errors=True)
        else:
            move_into_place(tmp, index_dir / QUERY_FOLDER)
        write_text(index_dir / METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return metadata


def _sniff_format(path: Path) -> str:
    with open(path, encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    return "vector" if "vector" in first else "pseudo"


# Settings that must agree between the parts of a merged index: its vectors and queries mean the
# same only where these do.


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
    for key in MATCHING_KEYS:
        values = {json.dumps(m.get(key)) for m in metas}
        if len(values) > 1:
            shown = ", ".join(f"{p}: {m.get(key)!r}" for p, m in zip(parts, metas))
            raise IncompatibleIndexError(f"the parts differ in {key} ({shown}); only indexes of the same encoder "
                                         "and settings can be merged")
    target = Path(index_dir)
    with output_lock(target):
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
                raise IndexBuildError(f"the merged index holds {stats['documents']} documents, "
                                      f"not the parts' {expected}")
            metadata = {
                **{k: metas[0].get(k) for k in MATCHING_KEYS},
                # where every part comes from the same collection and corpus (shards), they are the index's
                **{k: metas[0].get(k) if len({m.get(k) for m in metas}) == 1 else None
                   for k in ("collection", "corpus")},
                "documents": stats["documents"],
                "index_stats": stats,
                "merged_with": "org.apache.lucene.index.IndexWriter.addIndexes"
                               + (f", forceMerge({segments})" if segments else ""),
                "parts": [{"index": str(p), "documents": m["documents"], "shard": m.get("shard"),
                           "collection": m.get("collection"), "sources": table_sources(m),
                           "index_stats": m.get("index_stats")} for p, m in zip(parts, metas)],
                "versions": package_versions(),
            }
            modes = {m.get("query_mode", "full") for m in metas}
            if len(modes) > 1:
                raise IncompatibleIndexError(f"the parts are for different query modes ({', '.join(sorted(modes))}); "
                                             "only indexes of one query mode can be merged")
            # an idf table is recomputed from the merged index's document frequencies
            metadata.update(write_query_table(tmp, {**metadata, "model_path": metas[0].get("model_path")},
                                              modes.pop()))
            if metas[0].get("model_path"):
                metadata["model_path"] = metas[0]["model_path"]
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
    java.ensure_jvm()
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
        fault_point("merge.merged")
    finally:
        writer.close()
        for d in inputs:
            d.close()
        out.close()
