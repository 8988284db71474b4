"""Reading corpora, queries and qrels; writing Anserini collections.

Input corpora, one JSON object a line (``.jsonl``, ``.jsonl.gz`` or ``.jsonl.xz``; a leading UTF-8
byte-order mark, as Windows tools write one, is skipped in every text input):

- BEIR: ``{"_id": ..., "title": ..., "text": ...}``; the text is ``title + " " + text`` where a
  title exists (the convention Pyserini uses for BEIR);
- Pyserini JsonCollection: ``{"id": ..., "contents": ...}``.

Output collections (a folder of ``part-NNNNN.jsonl`` files) for Anserini's
``-impact -pretokenized`` indexing:

- ``vector`` (``JsonVectorCollection``): ``{"id": ..., "contents": "", "vector": {term: int}}``;
- ``pseudo`` (``JsonCollection``): ``{"id": ..., "contents": "term term other ..."}``, each term
  repeated by its integer weight, which is exactly the pseudo-document Anserini builds from a vector.

Terms are written in vocabulary order, so the same vectors always give the same bytes. Anserini
skips documents whose contents are empty; a document whose vector is empty (empty text, or nothing
survives quantization) is written with the single term :data:`EMPTY_DOCUMENT_TERM`, which is not a
vocabulary entry, so no query can match it, yet the document is indexed and counted.
"""

from __future__ import annotations

import gzip
import json
import lzma
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

from ..core.atomic import publish_file
from ..core.errors import NotFoundError, SettingError, SpladeLuceneError
from ..core.faults import fault_point

Format = Literal["vector", "pseudo"]
FORMATS = ("vector", "pseudo")
EMPTY_DOCUMENT_TERM = "[EMPTY]"
PART_SIZE = 100_000
# what a collection folder was made with (model, scales, pruning, counts), carried into the index
COLLECTION_METADATA_FILE = "collection.meta"


class InputError(SpladeLuceneError, ValueError):
    """Bad input, with the file and line that caused it."""


UTF8_BOM = b"\xef\xbb\xbf"


def open_bytes(path: str | Path):
    """A file opened for reading bytes: ``.gz`` gunzipped, ``.xz`` unpacked (``lzma``), else as it is."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".xz":
        return lzma.open(path, "rb")
    return open(path, "rb")


def raw_lines(fh) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, bytes) of a binary file, a leading UTF-8 byte-order mark dropped."""
    for lineno, raw in enumerate(fh, 1):
        if lineno == 1 and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM):]
        yield lineno, raw


class _TextLines:
    """A text file's lines (``.gz``/``.xz`` unpacked, a BOM dropped), each decoded as UTF-8 on its
    own, so that bytes that are not UTF-8 are an InputError naming the file and line."""

    def __init__(self, path: Path):
        self.path = path
        self.fh = open_bytes(path)

    def __iter__(self) -> Iterator[str]:
        for lineno, raw in raw_lines(self.fh):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{self.path}:{lineno}: not UTF-8 ({exc.reason} at byte {exc.start})") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


def open_text(path: str | Path) -> _TextLines:
    """A text file for reading line by line (``with open_text(p) as lines: for line in lines``),
    transparently unpacking ``.gz`` and ``.xz`` files."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no such file: {path}")
    return _TextLines(path)


def parse_line(raw: bytes, path: Path | str, lineno: int) -> dict | None:
    """One line of a JSON-lines file as its object (None for a blank line), or :class:`InputError`."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}:{lineno}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    with open_bytes(path) as fh:
        for lineno, raw in raw_lines(fh):
            obj = parse_line(raw, path, lineno)
            if obj is not None:
                yield lineno, obj


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def count_lines(path: str | Path) -> int:
    """Non-empty lines of a (possibly compressed) file, read as bytes: a cheap first pass for progress bars."""
    with open_bytes(path) as fh:
        return sum(1 for line in fh if line.strip())


@dataclass(frozen=True)
class Document:
    id: str
    text: str  # what is encoded: title + " " + text for BEIR records with a title
    line: int
    title: str = ""  # the BEIR title alone ("" where there is none)


def check_id(value, path: Path | str, lineno: int, what: str = "id") -> str:
    """An id that survives a TREC run or qrels line (fields split on whitespace) as it is: a
    non-empty string without whitespace, control characters or lone surrogates, or a JSON integer
    (taken as its decimal string). Anything else is an InputError naming the file, line and id."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise InputError(f"{path}:{lineno}: {what} {value!r} must be a string (or an integer)")
    if value.isprintable() and " " not in value and value:  # the usual id, checked at C speed
        return value
    if value == "":
        raise InputError(f"{path}:{lineno}: empty {what}")
    bad = next((c for c in value if c.isspace() or unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise InputError(f"{path}:{lineno}: {what} {value!r} holds {unicodedata.name(bad, repr(bad))}, "
                         "which a TREC run or qrels line cannot carry")
    return value


def record_id(obj: dict, path: Path, lineno: int) -> str:
    """The id of a corpus or query record (``_id``, ``id`` or ``docid``), checked by :func:`check_id`."""
    for key in ("_id", "id", "docid"):
        if key in obj:
            return check_id(obj[key], path, lineno, f"field {key!r}")
    raise InputError(f"{path}:{lineno}: missing field '_id' (BEIR) or 'id' (JsonCollection)")


def check_text(text: str, path: Path | str, lineno: int) -> str:
    """A text as it will be encoded: anything JSON holds passes (control characters and NUL are
    dropped by the tokenizer, right-to-left and non-BMP characters are ordinary characters) except a
    lone surrogate, which is no character and cannot be tokenized: an InputError naming file and line."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{path}:{lineno}: the text holds a lone surrogate ({text[exc.start]!r} at character "
                         f"{exc.start}), which is no Unicode character; fix the producer of the file") from None
    return text


def document_text(obj: dict, path: Path | str = "<input>", lineno: int = 0) -> str:
    """``title + " " + text`` (BEIR, title only where non-empty) or ``contents`` (JsonCollection)."""
    if "text" in obj:
        title = _field_text(obj.get("title"), "title", path, lineno)
        text = _field_text(obj["text"], "text", path, lineno)
        return check_text(f"{title} {text}" if title else text, path, lineno)
    if "contents" in obj:
        return check_text(_field_text(obj["contents"], "contents", path, lineno), path, lineno)
    raise InputError(f"{path}:{lineno}: missing field 'text' (BEIR) or 'contents' (JsonCollection)")


def _field_text(value, name: str, path: Path | str, lineno: int) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a number as text ("text": 1984) is its JSON spelling
    if not isinstance(value, str):
        raise InputError(f"{path}:{lineno}: field {name!r} must be a string, not {type(value).__name__}")
    return value


def corpus_file(folder: str | Path) -> Path | None:
    """A BEIR folder's corpus file (``corpus.jsonl``, else ``corpus.jsonl.gz``), or None."""
    return next((Path(folder) / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (Path(folder) / n).is_file()), None)


def read_corpus(path: str | Path, *, on_duplicate: Literal["error", "keep-first"] = "error") -> Iterator[Document]:
    """Stream documents of a corpus file, checking ids are present and unique."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no such corpus file: {path}")
    seen: dict[str, int] = {}
    for lineno, obj in _json_lines(path):
        docid = record_id(obj, path, lineno)
        text = document_text(obj, path, lineno)
        if docid in seen:
            if on_duplicate == "keep-first":
                continue
            raise InputError(f"{path}:{lineno}: duplicate document id {docid!r} (first on line {seen[docid]})")
        seen[docid] = lineno
        yield Document(docid, text, lineno, str(obj.get("title") or "") if "text" in obj else "")


def _read_topics(path: str | Path, missing: str, from_json, from_tsv, tsv_form: str) -> list[tuple[str, object]]:
    """(qid, query) pairs of a topics file: JSON lines (``from_json(obj, path, lineno)`` gives the
    pair) or TSV ``qid<TAB>rest`` (``from_tsv(rest, path, lineno)`` gives the query); ids unique."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{missing}: {path}")
    with open_text(path) as fh:
        first = next((line for line in fh if line.strip()), "")
    out: list[tuple[str, object]] = []
    if first.lstrip().startswith("{"):
        for lineno, obj in _json_lines(path):
            out.append(from_json(obj, path, lineno))
    else:
        with open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if "\t" not in line:
                    raise InputError(f"{path}:{lineno}: expected {tsv_form}")
                qid, rest = line.split("\t", 1)
                out.append((check_id(qid.strip(), path, lineno, "query id"), from_tsv(rest, path, lineno)))
    if not out:
        raise InputError(f"{path} holds no queries (it is empty or blank): a run of nothing is no result")
    ids = [q for q, _ in out]
    if len(set(ids)) != len(ids):
        dup = next(q for i, q in enumerate(ids) if q in ids[:i])
        raise InputError(f"{path}: duplicate query id {dup!r}")
    return out


def _json_query(obj: dict, path: Path, lineno: int) -> tuple[str, str]:
    qid = record_id(obj, path, lineno)
    if "text" not in obj:
        raise InputError(f"{path}:{lineno}: missing field 'text'")
    return qid, check_text(_field_text(obj["text"], "text", path, lineno), path, lineno)


def read_queries(path: str | Path) -> list[tuple[str, str]]:
    """Queries as (qid, text): BEIR ``queries.jsonl`` or a TSV ``qid<TAB>text`` topic file."""
    return _read_topics(path, "no such queries file", _json_query, check_text, "'qid<TAB>text'")


def vector_record(docid: str, terms: dict[str, int]) -> dict:
    """A JsonVectorCollection record; an empty vector gets the placeholder term."""
    return {"id": docid, "contents": "", "vector": terms if terms else {EMPTY_DOCUMENT_TERM: 1}}


def pseudo_document(terms: dict[str, int]) -> str:
    """Each term repeated by its weight, space-separated (what Anserini builds from a vector)."""
    if not terms:
        return EMPTY_DOCUMENT_TERM
    return " ".join(" ".join([term] * weight) for term, weight in terms.items())


def pseudo_record(docid: str, terms: dict[str, int]) -> dict:
    return {"id": docid, "contents": pseudo_document(terms)}


def topic_line(qid: str, terms: dict[str, int]) -> str:
    """A pre-encoded topic for Anserini's ``-topicReader TsvString -impact -pretokenized``:
    ``qid<TAB>`` and each term repeated by its integer weight (Anserini counts the repeats)."""
    return f"{qid}\t" + " ".join(" ".join([term] * weight) for term, weight in terms.items()) + "\n"


def _check_weight(term, weight, path: Path, lineno: int) -> int:
    if not isinstance(term, str) or not term or any(c.isspace() for c in term):
        raise InputError(f"{path}:{lineno}: a query term must be a non-empty string without whitespace, "
                         f"not {term!r}")
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise InputError(f"{path}:{lineno}: the weight of {term!r} must be a positive integer (a quantized "
                         f"query), not {weight!r}")
    return weight


def _json_vector(obj: dict, path: Path, lineno: int) -> tuple[str, dict[str, int]]:
    qid = obj["qid"] if "qid" in obj and "id" not in obj else record_id(obj, path, lineno)
    qid = check_id(qid, path, lineno, "query id")
    vector = obj.get("vector")
    if not isinstance(vector, dict):
        raise InputError(f"{path}:{lineno}: expected {{\"id\": qid, \"vector\": {{term: int}}}}")
    return qid, {t: _check_weight(t, w, path, lineno) for t, w in vector.items()}


def _counted_terms(text: str, path: Path, lineno: int) -> dict[str, int]:
    terms: dict[str, int] = {}
    for term in text.split():
        terms[term] = terms.get(term, 0) + 1
    return terms


def read_encoded_queries(path: str | Path) -> list[tuple[str, dict[str, int]]]:
    """Pre-encoded queries as (qid, {term: int}): the TSV topics :func:`topic_line` writes (each term
    repeated by its weight) or JSON lines ``{"id": qid, "vector": {term: int}}``."""
    return _read_topics(path, "no such encoded queries file", _json_vector, _counted_terms,
                        "'qid<TAB>term term ...' (pre-encoded topics)")


def make_record(fmt: Format, docid: str, terms: dict[str, int]) -> dict:
    """The record for one document. Weights must be ints: Anserini truncates floats (1.99 -> 1)."""
    for term, weight in terms.items():
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            raise SettingError(f"document {docid!r}: weight of {term!r} must be a positive int, got {weight!r}; "
                             "quantize first (Anserini would truncate it)")
    if fmt == "vector":
        return vector_record(docid, terms)
    if fmt == "pseudo":
        return pseudo_record(docid, terms)
    raise SettingError(f"format must be one of {FORMATS}, not {fmt!r}")


def part_name(number: int) -> str:
    """The file name of a collection's part ``number`` (from 0)."""
    return f"part-{number:05d}.jsonl"


def part_number(name: str) -> int:
    """The number of a part file named by :func:`part_name`."""
    return int(name.removeprefix("part-").split(".", 1)[0])


def record_line(fmt: Format, docid: str, terms: dict[str, int]) -> str:
    """One record as its line in a part file (ASCII JSON and a newline)."""
    return json.dumps(make_record(fmt, docid, terms), ensure_ascii=True) + "\n"


def _publish_part(partial: Path, fh) -> Path:
    """Flush ``fh`` (open on ``partial``, a ``.partial`` file) to disk, close it and rename the file
    to its final name: a part file without ``.partial`` is complete."""
    fh.close()
    return publish_file(partial, partial.with_name(partial.name.removesuffix(".partial")))


def write_part(folder: str | Path, number: int, text: str) -> Path:
    """Write a whole part (its records' lines) the way :class:`CollectionWriter` does."""
    partial = Path(folder) / f"{part_name(number)}.partial"
    fh = open(partial, "w", encoding="utf-8")
    try:
        fh.write(text)
    except BaseException:
        fh.close()
        raise
    return _publish_part(partial, fh)


class CollectionWriter:
    """Writes records into ``part-NNNNN.jsonl`` files of at most ``part_size`` documents.

    A part is written as ``part-NNNNN.jsonl.partial``, flushed to disk and renamed when full (or when
    the writer closes without an error), then reported to ``on_part(info)`` with ``info`` =
    ``{"file", "documents", "empty", "truncated"}``: a part file without ``.partial`` is complete.
    ``start`` continues the numbering after that many documents already written (a resumed run). A
    writer left by an exception keeps its last part ``.partial``.
    """

    def __init__(self, folder: str | Path, fmt: Format = "vector", part_size: int = PART_SIZE, *,
                 start: int = 0, on_part=None):
        if fmt not in FORMATS:
            raise SettingError(f"format must be one of {FORMATS}, not {fmt!r}")
        if part_size < 1 or start % part_size:
            raise SettingError(f"part_size must be at least 1 and divide start ({part_size}, {start})")
        self.folder = Path(folder)
        self.fmt = fmt
        self.part_size = part_size
        self.count = start
        self.empty = 0
        self.truncated = 0
        self.on_part = on_part
        self._fh = None
        self._part = {"documents": 0, "empty": 0, "truncated": 0}
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, docid: str, terms: dict[str, int], *, truncated: bool = False) -> None:
        if self._fh is None:
            name = part_name(self.count // self.part_size)
            self._fh = open(self.folder / f"{name}.partial", "w", encoding="utf-8")
            self._part = {"file": name, "documents": 0, "empty": 0, "truncated": 0}
        self._fh.write(record_line(self.fmt, docid, terms))
        self.count += 1
        self._part["documents"] += 1
        if not terms:
            self.empty += 1
            self._part["empty"] += 1
        if truncated:
            self.truncated += 1
            self._part["truncated"] += 1
        if self._part["documents"] == self.part_size:
            self._finish_part()

    def _finish_part(self) -> None:
        fh, self._fh = self._fh, None
        _publish_part(self.folder / f"{self._part['file']}.partial", fh)
        fault_point("encode.part")
        if self.on_part is not None:
            self.on_part(dict(self._part))

    def close(self) -> None:
        if self._fh is not None:
            self._finish_part()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        elif self._fh is not None:
            self._fh.close()
            self._fh = None


def collection_files(folder: str | Path) -> Sequence[Path]:
    return sorted(Path(folder).glob("*.jsonl")) + sorted(Path(folder).glob("*.json"))
