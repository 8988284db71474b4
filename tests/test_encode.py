"""The SPLADE encoder against the formula as a user writes it from the paper (full logits,
log1p(relu), mask, max), on real SciFact documents, with the offline default model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from splade_lucene.core.quantize import quantize_array
from splade_lucene.encoding.loading import default_model_path
from splade_lucene.encoding.model import SpladeEncoder
from splade_lucene.formats.collection import EMPTY_DOCUMENT_TERM, read_corpus


def plain_splade(encoder, texts, max_length=512):
    batch = encoder.tokenizer(texts, max_length=max_length, truncation=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = encoder.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    values, _ = torch.max(torch.log(1 + torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1), dim=1)
    values = values.numpy()
    values[:, encoder.tokenizer.all_special_ids] = 0
    return values


def dense(vector, size):
    out = np.zeros(size, dtype=np.float32)
    out[vector.ids] = vector.weights
    return out


def test_default_model_is_found_through_package_metadata():
    path = default_model_path()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert path.parts[-2:] == ("cognition", "model")


def test_matches_the_plain_formula_on_real_documents(datasets, encoder):
    docs = [d.text for d in read_corpus(datasets / "scifact" / "corpus.jsonl")][:24]
    ref = plain_splade(encoder, docs)
    ours = encoder.encode(docs)
    diff = max(np.abs(dense(v, encoder.vocab_size) - r).max() for v, r in zip(ours, ref))
    assert diff < 1e-4
    q_ours = np.stack([quantize_array(dense(v, encoder.vocab_size), 100) for v in ours])
    q_ref = quantize_array(ref, 100)
    nonzero = (q_ours > 0) | (q_ref > 0)
    assert (q_ours[nonzero] == q_ref[nonzero]).mean() >= 0.999
    assert np.abs(q_ours - q_ref).max() <= 1


def test_special_tokens_never_in_output(encoder):
    specials = set(encoder.tokenizer.all_special_tokens)
    for vector in encoder.encode(["", "[CLS] [SEP] [MASK] text", "a normal sentence about wings"]):
        assert not specials & set(encoder.to_terms(vector))


def test_expansion_kitten_to_cat(encoder):
    terms = encoder.to_terms(encoder.encode(["the kitten is sleeping"])[0])
    assert {"cat", "sleep"} <= set(terms)
    assert "cat" not in encoder.tokenizer.tokenize("the kitten is sleeping")


def test_order_and_batching_do_not_change_vectors(encoder):
    texts = ["short", "a somewhat longer text about aircraft wings and lift", "medium length text", ""]
    one = [dense(v, encoder.vocab_size) for v in SpladeEncoder(batch_size=1).encode(texts)]
    many = [dense(v, encoder.vocab_size) for v in encoder.encode(texts)]
    for a, b in zip(one, many):
        assert np.abs(a - b).max() < 1e-4


def test_truncation_at_max_length(encoder):
    text = "wing " * 600
    long_vec = encoder.encode([text], max_length=16)[0]
    ref = plain_splade(encoder, [text], max_length=16)[0]
    assert np.abs(dense(long_vec, encoder.vocab_size) - ref).max() < 1e-4
    assert encoder.tokenize([text], max_length=16)["input_ids"].shape[1] == 16


def test_missing_model_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model path .*nowhere does not exist .*masked language model"):
        SpladeEncoder(tmp_path / "nowhere")


def test_not_a_masked_lm(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_embd": 8, "n_head": 2}))
    with pytest.raises(ValueError, match=r"is not a masked language model \(model_type 'gpt2'\)"):
        SpladeEncoder(tmp_path)


def test_bad_corpus_line_leaves_nothing_at_the_target(tmp_path, encoder):
    from splade_lucene.encoding.local import encode_corpus
    from splade_lucene.formats.collection import InputError

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(f'{{"_id": "{i}", "text": "document {i}"}}\n' for i in range(300)) + '{"_id": "x"\n')
    with pytest.raises(InputError, match=r"corpus.jsonl:301: not valid JSON"):
        encode_corpus(corpus, tmp_path / "out", encoder=encoder, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl"]


def test_encode_corpus_streams_in_input_order(tmp_path, encoder):
    from splade_lucene.encoding.local import encode_corpus

    corpus = tmp_path / "corpus.jsonl"
    texts = ["wing " * (i % 7 + 1) + f"flow {i}" for i in range(600)] + [""]
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    summary = encode_corpus(corpus, tmp_path / "out", encoder=encoder, progress=False)
    assert summary.documents == 601 and summary.empty_documents == 1  # the empty text
    records = [json.loads(line) for line in (tmp_path / "out" / "part-00000.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"d{i}" for i in range(601)]
    assert records[600]["vector"] == {EMPTY_DOCUMENT_TERM: 1}
    expected = encoder.encode([texts[5], texts[599]])
    for rec, vec in zip([records[5], records[599]], expected):
        assert rec["vector"] == {t: round(w * 100) for t, w in encoder.to_terms(vec).items() if round(w * 100) > 0}


def test_bf16_projection_stays_close(datasets, encoder):
    # 8 documents: bf16 matrix products are slow on CPUs without native bf16 (2 minutes for 24 here)
    docs = [d.text for d in read_corpus(datasets / "scifact" / "corpus.jsonl")][:8]
    ref = plain_splade(encoder, docs)
    fast = SpladeEncoder(dtype="bf16").encode(docs)
    q_fast = np.stack([quantize_array(dense(v, encoder.vocab_size), 100) for v in fast])
    q_ref = quantize_array(ref, 100)
    nonzero = (q_fast > 0) | (q_ref > 0)
    share = (q_fast[nonzero] == q_ref[nonzero]).mean()
    assert 0.5 < share < 1.0  # close, and not silently the fp32 path
    assert np.abs(q_fast - q_ref).max() <= 5
    with pytest.raises(ValueError, match=r"dtype must be one of \('fp32', 'bf16'\)"):
        SpladeEncoder(dtype="fp16")


def test_gpu_form_of_the_pooling_gives_the_same_vectors(datasets, encoder):
    # The batched form used on a GPU (padding masked to -inf) against the per-text CPU form, run here on CPU.
    docs = [d.text for d in read_corpus(datasets / "scifact" / "corpus.jsonl")][:40]
    cpu_form = encoder.encode(docs)
    encoder.runtime.on_gpu = True
    try:
        gpu_form = encoder.encode(docs)
    finally:
        encoder.runtime.on_gpu = False
    for a, b in zip(cpu_form, gpu_form):
        assert np.abs(dense(a, encoder.vocab_size) - dense(b, encoder.vocab_size)).max() < 1e-4


def test_batches_are_padded_to_few_shapes(encoder):
    # Bounded shapes keep oneDNN's per-shape kernel cache, and so memory, flat over a long corpus.
    assert encoder.tokenize(["three word text"])["input_ids"].shape[1] == 32
    assert encoder.tokenize(["wing " * 40])["input_ids"].shape[1] == 64
    assert encoder.tokenize(["wing " * 600])["input_ids"].shape[1] == 512


def test_device_errors_are_clear():
    with pytest.raises(ValueError, match="device must be"):
        SpladeEncoder(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            SpladeEncoder(device="cuda")


@pytest.mark.parametrize("text", ["", "  \n", "?!", "*** ---"])
def test_texts_without_words_encode_to_the_empty_vector(encoder, text):
    vectors = encoder.encode([text, "a kitten"])
    assert len(vectors[0]) == 0 and len(vectors[1]) > 0
    # the model itself would give [CLS] and [SEP] alone some terms: that is what is avoided
    batch = encoder.tokenize([text])
    with torch.inference_mode():
        logits = encoder.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert (torch.log1p(torch.relu(logits)).amax(dim=1) > 0).sum() > 0


def test_windows_leave_short_texts_alone_and_extend_long_ones(datasets, encoder):
    long_docs = [d.text for d in read_corpus(datasets / "scifact" / "corpus.jsonl")][:6]
    short = ["a kitten sleeps on the mat", "boundary layer transition in supersonic flow"]
    plain = SpladeEncoder(max_length=64)
    windowed = SpladeEncoder(max_length=64, stride=32)
    for x, y in zip(plain.encode(short), windowed.encode(short)):  # fit in 64 tokens: the very same vector
        assert x.ids.tolist() == y.ids.tolist() and x.weights.tolist() == y.weights.tolist()
    for text, x, y in zip(long_docs, plain.encode(long_docs), windowed.encode(long_docs)):
        assert len(plain.tokenizer(text, verbose=False)["input_ids"]) > 64
        cut, pooled = dict(zip(x.ids.tolist(), x.weights.tolist())), dict(zip(y.ids.tolist(), y.weights.tolist()))
        # the first window is the truncated text: max-pooling can only add terms and raise weights
        assert all(pooled.get(i, 0.0) >= w - 1e-5 for i, w in cut.items())
        assert len(pooled) > len(cut) and x.truncated and not y.truncated
        # the last window ends with the text: a term only in the tail is found
        tail = plain.tokenizer.tokenize(text)[-20:]
        tail_ids = set(plain.tokenizer.convert_tokens_to_ids(tail)) - set(plain.runtime.special_ids.tolist())
        assert tail_ids & set(pooled) - set(cut) or tail_ids <= set(cut)
    with pytest.raises(ValueError, match="stride must be between 1 and max_length - 2"):
        SpladeEncoder(max_length=64, stride=63)


def test_a_pickle_that_is_more_than_tensors_is_refused_and_not_run(tmp_path):
    import pickle
    import shutil

    from splade_lucene.encoding.loading import ModelError, load_masked_lm

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (default_model_path() / name).is_file():
            shutil.copy(default_model_path() / name, folder / name)
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"bert.embeddings.word_embeddings.weight": Payload()}))
    with pytest.raises(ModelError, match=r"cannot load the weights in .*weights_only=True"):
        load_masked_lm(str(folder))
    assert not marker.exists()
