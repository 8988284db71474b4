import numpy as np
import torch

from splade_lucene.encoding.pooling import dense_to_sparse, pad_rows, splade_max_pool


def test_pooling_equals_the_splade_formula():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 50) * 3  # 3 texts, 7 positions, vocab 50
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] * 1 + [0] * 6])
    # naver/splade: max over positions of log(1 + relu(logits)) * mask
    expected, _ = torch.max(torch.log(1 + torch.relu(logits)) * mask.unsqueeze(-1), dim=1)
    rows = logits[mask.bool()]
    owner = torch.nonzero(mask, as_tuple=True)[0]
    got = splade_max_pool(rows, owner, 3)
    assert torch.allclose(got, expected, atol=1e-6)
    # padding never contributes: text 2 pools one position only
    assert torch.allclose(got[2], torch.log1p(torch.relu(logits[2, 0])), atol=1e-6)


def test_dense_to_sparse_drops_special_ids():
    dense = np.array([[0.0, 1.5, 0.0, 2.0], [3.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    out = dense_to_sparse(dense, np.array([0]))
    assert out[0].ids.tolist() == [1, 3] and out[0].weights.tolist() == [1.5, 2.0]
    assert len(out[1]) == 0


def test_row_padding_keeps_the_max_and_bounds_shapes():
    torch.manual_seed(1)
    for n in (1, 5, 32, 33, 70):
        rows = torch.randn(n, 9)
        padded = pad_rows(rows, 32)
        assert padded.shape[0] % 32 == 0 and padded.shape[0] - n < 32
        assert torch.equal(padded[:n], rows)
        assert torch.equal(padded.amax(dim=0), rows.amax(dim=0))
    assert pad_rows(torch.zeros(0, 9), 32).shape == (0, 9)
