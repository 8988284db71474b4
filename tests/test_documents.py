"""formats.documents: a corpus's documents by id, read at an offset in a plain file (a byte-order
mark and blank lines counted) or kept in memory for a compressed one; the first of a repeated id."""

from __future__ import annotations

import gzip
import json
import lzma

import pytest

from splade_lucene.core.errors import UnknownIdError
from splade_lucene.formats.collection import read_corpus
from splade_lucene.formats.documents import DocumentStore


def test_documents_by_id_in_plain_and_compressed_corpora(tmp_path):
    lines = [json.dumps({"_id": "a", "title": "Tï", "text": "first ✓"}), "",
             json.dumps({"_id": "b", "text": "second"}), json.dumps({"_id": "a", "text": "repeated"}),
             json.dumps({"id": "c", "contents": "third, JsonCollection"})]
    data = b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode()
    plain = tmp_path / "corpus.jsonl"
    plain.write_bytes(data)
    (tmp_path / "corpus.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "corpus.jsonl.xz").write_bytes(lzma.compress(data))
    want = {d.id: d for d in read_corpus(plain, on_duplicate="keep-first")}
    for name in ("corpus.jsonl", "corpus.jsonl.gz", "corpus.jsonl.xz"):
        store = DocumentStore(tmp_path / name)
        assert len(store) == 3 and "b" in store and "z" not in store
        assert {d: store[d] for d in ("a", "b", "c")} == want, name
        assert store["a"].title == "Tï" and store["a"].text == "Tï first ✓"
        assert store.get("z") is None
        with pytest.raises(UnknownIdError, match="no document 'z'"):
            store["z"]
