"""sentence-transformers SparseEncoder folders (``modules.json``): one that computes what this encoder
does (a masked LM, then SpladePooling's max of log(1 + relu)) loads and encodes as the masked LM;
any other module or pooling is refused naming it, rather than giving other vectors silently."""

from __future__ import annotations

import json

import pytest

from splade_lucene.encoding.loading import ModelError, default_model_path
from splade_lucene.encoding.model import SpladeEncoder


def sparse_encoder_folder(tmp_path, modules: list[dict], pooling: dict | None = None):
    folder = tmp_path / "st-model"
    folder.mkdir()
    for f in default_model_path().iterdir():
        if f.is_file():
            (folder / f.name).symlink_to(f)
    (folder / "modules.json").write_text(json.dumps(modules))
    if pooling is not None:
        (folder / "1_SpladePooling").mkdir()
        (folder / "1_SpladePooling" / "config.json").write_text(json.dumps(pooling))
    return folder


MLM = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.sparse_encoder.modules.MLMTransformer"}
POOL = {"idx": 1, "name": "1", "path": "1_SpladePooling",
        "type": "sentence_transformers.sparse_encoder.modules.SpladePooling"}


def test_a_max_relu_sparse_encoder_folder_encodes_as_its_masked_lm(tmp_path, encoder):
    folder = sparse_encoder_folder(tmp_path, [MLM, POOL], {"pooling_strategy": "max", "activation_function": "relu",
                                                          "word_embedding_dimension": 30522})
    text = "kittens sleep in the warm sun"
    theirs = SpladeEncoder(str(folder)).encode([text])[0]
    ours = encoder.encode([text])[0]
    assert theirs.ids.tolist() == ours.ids.tolist() and theirs.weights.tolist() == ours.weights.tolist()


@pytest.mark.parametrize("modules, pooling, named", [
    ([MLM, POOL], {"pooling_strategy": "sum", "activation_function": "relu"}, "sum pooling of relu"),
    ([MLM, POOL], {"pooling_strategy": "max", "activation_function": "log1p_relu"}, "max pooling of log1p_relu"),
    ([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.sparse_encoder.modules.Router"}], None,
     "Router"),
    ([{**MLM, "path": "0_MLMTransformer"}, POOL], {"pooling_strategy": "max"}, "'0_MLMTransformer'"),
])
def test_other_sparse_encoder_folders_are_refused_naming_why(tmp_path, modules, pooling, named):
    folder = sparse_encoder_folder(tmp_path, modules, pooling)
    with pytest.raises(ModelError, match=named.replace("(", r"\(")):
        SpladeEncoder(str(folder))
