"""The one record of what a collection is made with."""

from __future__ import annotations

import dataclasses

import pytest

from splade_lucene.formats.metadata import MATCHING_KEYS, CollectionOptions


def test_defaults_are_filled_in_and_checked_once():
    o = CollectionOptions()
    assert (o.scale, o.query_scale, o.fmt, o.part_size) == (100.0, 100.0, "vector", 100_000)
    assert CollectionOptions(scale=50).query_scale == 50.0  # the query scale follows the document scale
    assert CollectionOptions.of(None, scale=None, doc_top_k=64).record()["doc_top_k"] == 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.scale = 3
    for bad, match in (({"scale": 0}, "scale"), ({"fmt": "csv"}, "format"), ({"doc_top_k": 0}, "top"),
                       ({"part_size": 0}, "part_size"), ({"query_max_length": 0}, "query_max_length")):
        with pytest.raises(ValueError, match=match):
            CollectionOptions(**bad)
    with pytest.raises(TypeError, match=r"unknown collection options \['doc_topk'\]"):
        CollectionOptions.of(doc_topk=5)


def test_the_record_names_what_collection_meta_and_merging_use():
    record = CollectionOptions().record()
    assert set(record) == {"scale", "query_scale", "format", "query_max_length", "query_model", "doc_top_k",
                           "doc_min_weight", "query_top_k", "query_min_weight", "part_size"}
    assert set(MATCHING_KEYS) == {"model_sha256", "query_model_sha256", "model", "query_model", "scale",
                                  "query_scale", "max_length", "query_max_length", "stride", "pooling", "dtype",
                                  "format", "doc_top_k", "doc_min_weight", "query_top_k", "query_min_weight"}
