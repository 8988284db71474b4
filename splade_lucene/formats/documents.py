"""A corpus's documents by id, for showing them: explanations, the server's ``/doc`` and hits' texts.

A plain JSON-lines corpus is read once for each document's byte offset (a few bytes a document in
memory; a lookup reads one line); a compressed one (``.gz``, ``.xz``) cannot be read at an offset, so
its texts are kept in memory. Documents repeated under one id keep the first, as indexing does.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import NotFoundError, UnknownIdError
from .collection import UTF8_BOM, Document, document_text, open_bytes, parse_line, raw_lines, record_id


class DocumentStore:
    """``store[docid]`` -> :class:`~splade_lucene.formats.collection.Document` (id, text as encoded,
    title), or :class:`~splade_lucene.core.errors.UnknownIdError`; ``docid in store``; ``len(store)``."""

    def __init__(self, corpus: str | Path):
        self.path = Path(corpus)
        if not self.path.is_file():
            raise NotFoundError(f"no such corpus file: {self.path}")
        self._plain = self.path.suffix not in (".gz", ".xz")
        self._where: dict[str, tuple[int, int]] = {}  # id -> (byte offset, line number): plain files
        self._docs: dict[str, Document] = {}  # compressed files
        with open_bytes(self.path) as head:
            offset = 3 if head.read(3) == UTF8_BOM else 0  # raw_lines drops the mark from line 1
        with open_bytes(self.path) as fh:
            for lineno, raw in raw_lines(fh):
                start, offset = offset, offset + len(raw)
                obj = parse_line(raw, self.path, lineno)
                if obj is None:
                    continue
                docid = record_id(obj, self.path, lineno)
                if docid in self._where or docid in self._docs:
                    continue
                if self._plain:
                    self._where[docid] = (start, lineno)
                else:
                    self._docs[docid] = self._document(obj, lineno)

    def _document(self, obj: dict, lineno: int) -> Document:
        title = str(obj.get("title") or "") if "text" in obj else ""
        return Document(record_id(obj, self.path, lineno), document_text(obj, self.path, lineno), lineno, title)

    def __len__(self) -> int:
        return len(self._where) if self._plain else len(self._docs)

    def __contains__(self, docid: object) -> bool:
        return docid in (self._where if self._plain else self._docs)

    def __getitem__(self, docid: str) -> Document:
        if not self._plain:
            try:
                return self._docs[docid]
            except KeyError:
                raise UnknownIdError(f"no document {docid!r} in {self.path.name}") from None
        try:
            offset, lineno = self._where[docid]
        except KeyError:
            raise UnknownIdError(f"no document {docid!r} in {self.path.name}") from None
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            return self._document(parse_line(fh.readline(), self.path, lineno), lineno)

    def get(self, docid: str) -> Document | None:
        return self[docid] if docid in self else None
