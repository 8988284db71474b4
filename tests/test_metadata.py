import pytest

from splade_lucene.formats.metadata import IncompatibleIndexError, check_compatible

META = {"model": "splade-tiny", "model_sha256": "a" * 64, "query_model": "splade-tiny",
        "query_model_sha256": "a" * 64, "scale": 100.0, "query_scale": 100.0}


def test_same_model_and_scale_accepted():
    check_compatible(META, model_sha256="a" * 64, model="/some/copy/of/splade-tiny", scale=100)


def test_other_model_refused_naming_both():
    with pytest.raises(IncompatibleIndexError, match=r"query model splade-tiny \(sha256 aaaaaaaaaaaa\).*"
                                                     r"other-model \(sha256 bbbbbbbbbbbb\)"):
        check_compatible(META, model_sha256="b" * 64, model="other-model", scale=100)


def test_other_scale_refused_naming_both():
    with pytest.raises(IncompatibleIndexError, match=r"query scale 100.0 .* scale 51.2"):
        check_compatible(META, model_sha256="a" * 64, model="splade-tiny", scale=51.2)


def test_separate_query_model_is_checked():
    meta = {**META, "query_model": "q-model", "query_model_sha256": "c" * 64}
    check_compatible(meta, model_sha256="c" * 64, model="q-model", scale=100)
    with pytest.raises(IncompatibleIndexError, match="q-model"):
        check_compatible(meta, model_sha256="a" * 64, model="splade-tiny", scale=100)


def test_hub_names_without_weights_compare_by_name():
    meta = {"model": "org/splade", "scale": 100.0}
    check_compatible(meta, model_sha256=None, model="org/splade", scale=100)
    with pytest.raises(IncompatibleIndexError, match="org/splade .* org/other"):
        check_compatible(meta, model_sha256=None, model="org/other", scale=100)
