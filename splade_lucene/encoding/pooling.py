"""SPLADE pooling: ``log(1 + relu(logit))`` max-pooled over a text's positions, and sparse vectors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Generic head: rows of the vocabulary projection computed at once (2048 x 30522 floats: 250 MB).
PROJECTION_CHUNK_ROWS = 2048


# Fused BERT head: vocabulary columns per block; one text's block of logits (<= 512 x 4096 floats)
# stays in cache and is reduced to its max at once, so the full logits never exist.
VOCAB_BLOCK = 4096


# Fused BERT head: each text's rows are padded to a multiple of this, and batches to a multiple of
# SEQ_BUCKET positions, so the math kernels see few distinct shapes: oneDNN keeps a compiled kernel
# per shape, and without buckets its cache grows with the corpus (measured: 1.08 GB peak for 1,000
# SciFact documents, 1.41 GB for the same documents four times).
ROW_BUCKET = 32


@dataclass(frozen=True)
class SparseVector:
    """Non-zero vocabulary ids (ascending) and their float weights."""

    ids: np.ndarray  # int64
    weights: np.ndarray  # float32
    truncated: bool = False  # the text was cut at the max length

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def accumulate_max_logits(rows, row_owner, out) -> None:
    """``out[t] = max(out[t], max of rows owned by t)``, in place; ``out`` starts at zeros.

    ``rows``: (N, V) logits of real token positions; ``row_owner``: (N,) index of each row's text.
    """
    index = row_owner.unsqueeze(1).expand(-1, rows.shape[1])  # a view: no copy
    out.scatter_reduce_(0, index, rows.to(out.dtype), "amax", include_self=True)


def splade_max_pool(rows, row_owner, n_texts: int):
    """max over positions of log(1 + relu(logits)), per text: a (n_texts, V) tensor.

    log1p(relu(.)) is monotone non-decreasing, so it commutes with max: pooling the raw logits from
    a zero start (which is the relu) and taking log1p once per text gives the same values as
    naver/splade's ``max(log(1 + relu(logits)))`` while evaluating log1p on V values per text
    instead of positions x V.
    """
    import torch

    out = torch.zeros((n_texts, rows.shape[1]), dtype=torch.float32, device=rows.device)
    accumulate_max_logits(rows, row_owner, out)
    return torch.log1p(out)


def pad_rows(rows, multiple: int):
    """``rows`` with copies of its first row appended up to a multiple of ``multiple`` rows.

    A max over the rows is unchanged; empty inputs are returned as they are.
    """
    n = rows.shape[0]
    extra = -n % multiple
    if n == 0 or extra == 0:
        return rows
    import torch

    return torch.cat([rows, rows[:1].expand(extra, -1)])


def dense_to_sparse(dense: np.ndarray, drop_ids: np.ndarray) -> list[SparseVector]:
    """Rows of a (B, V) array to sparse vectors, removing the ``drop_ids`` columns."""
    dense = dense.copy()
    dense[:, drop_ids] = 0
    out = []
    for row in dense:
        ids = np.flatnonzero(row)
        out.append(SparseVector(ids.astype(np.int64), row[ids].astype(np.float32)))
    return out
