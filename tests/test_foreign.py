"""Collections encoded elsewhere (`index --foreign --model M --scale S`): JsonVectorCollection files with
integer weights and no metadata of ours index into an index our searchers and Pyserini open as usual,
with the same hits as the same vectors encoded here; bad records are refused naming file and line."""

from __future__ import annotations

import json
import shutil

import pytest

from splade_lucene import cli
from splade_lucene.core.errors import SettingError
from splade_lucene.formats.collection import COLLECTION_METADATA_FILE, InputError, collection_files
from splade_lucene.indexing.foreign import stated_metadata


@pytest.fixture(scope="module")
def foreign(cranfield, tmp_path_factory):
    """Cranfield's vectors as a foreign folder: its part files without our metadata, plus a document
    whose vector is empty, which Anserini leaves out."""
    folder = tmp_path_factory.mktemp("foreign") / "collection"
    folder.mkdir()
    for part in collection_files(cranfield["base"] / "vector"):
        shutil.copy(part, folder / part.name)
    (folder / "part-99999.jsonl").write_text(json.dumps({"id": "empty-one", "contents": "", "vector": {}}) + "\n")
    return folder


def test_a_foreign_collection_indexes_as_ours(cranfield, foreign, tmp_path, capsys):
    from pyserini.search.lucene import LuceneImpactSearcher

    from splade_lucene.search.encoders import QueryEncoder
    from splade_lucene.search.searcher import Searcher

    with pytest.warns(UserWarning, match="1 documents have an empty vector"):
        code = cli.main(["--quiet", "index", "--collection", str(foreign), "--index", str(tmp_path / "idx"),
                         "--foreign", "--scale", "100"])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "idx" / "splade_lucene.json").read_text())
    assert meta["foreign"] is True and meta["scale"] == meta["query_scale"] == 100.0
    assert meta["documents"] == len(cranfield["vectors"]) and meta["empty_documents_left_out"] == 1
    queries = cranfield["queries"]
    with Searcher(tmp_path / "idx") as theirs, Searcher(cranfield["vector_index"]) as ours:
        assert theirs.engine == "memory"
        assert theirs.batch_search(queries, k=100) == ours.batch_search(queries, k=100)
    index = str(tmp_path / "idx")
    pyserini = LuceneImpactSearcher(index, QueryEncoder.from_index(index), min_idf=-1)
    qid, text = queries[0]
    with Searcher(cranfield["vector_index"]) as ours:
        assert [(h.docid, h.score) for h in pyserini.search(text, k=20)] == \
            [(h.docid, h.score) for h in ours.search(text, k=20)]


def test_bad_foreign_records_are_refused_naming_file_and_line(cranfield, foreign, tmp_path):
    def folder_with(line: str):
        bad = tmp_path / f"bad-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(foreign, bad)
        (bad / "part-99999.jsonl").write_text('{"id": "ok", "vector": {"wing": 3}}\n' + line + "\n")
        return bad

    cases = [('{"id": "x", "vector": {"wing": 1.5}}', "part-99999.jsonl:2: the weight of 'wing' is 1.5"),
             ('{"id": "x", "vector": {"wing": -2}}', "not an integer of at least 0"),
             ('{"id": "x", "vector": {"wing": "3"}}', "not an integer"),
             ('{"id": "x", "vector": {"zzqqxx-not-a-piece": 3, "wing": 2}}', "'zzqqxx-not-a-piece'"),
             ('{"id": "x", "contents": "wing wing"}', 'needs "vector"'),
             ('{"vector": {"wing": 2}}', "part-99999.jsonl:2")]
    for line, message in cases:
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            stated_metadata(folder_with(line), None, 100)
    ours = tmp_path / "ours"
    shutil.copytree(foreign, ours)
    (ours / COLLECTION_METADATA_FILE).write_text("{}")
    with pytest.raises(SettingError, match="index it without --foreign"):
        stated_metadata(ours, None, 100)
    with pytest.raises(SettingError, match="scale"):
        stated_metadata(foreign, None, 0)
