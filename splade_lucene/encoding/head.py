"""The SPLADE vector as a differentiable function, for training.

``log(1 + relu(max over positions of (h @ W.T + b)))`` per text and vocabulary entry, where ``h`` are
the MLM head's transformed hidden states. The forward pass never holds a text's full logits: each
vocabulary block of a text's real positions is reduced to its max at once (as the encoder's fused
head does), keeping the arg-max position. The gradient of a max flows only to its arg-max, and that
of ``log1p(relu(z))`` only where ``z > 0``, which is the few hundred non-zero terms of each vector:
the backward pass gathers exactly those (term, position) pairs, so it costs a few hundred dot
products per text instead of another positions x vocabulary product.
"""

from __future__ import annotations

import torch

# vocabulary columns per block: one text's block of logits (<= 512 x 4096 floats) stays small
VOCAB_BLOCK = 4096


def masked_max(hidden: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(max, arg-max position) over the masked positions of ``hidden @ weight.T``.

    ``hidden``: (texts, positions, H); ``mask``: (texts, positions) bool, at least one position per
    text; ``weight``: (V, H). Returns two (texts, V) tensors: float maxima and int64 positions.
    """
    texts, _, _ = hidden.shape
    vocab = weight.shape[0]
    values = torch.empty((texts, vocab), dtype=hidden.dtype, device=hidden.device)
    where = torch.empty((texts, vocab), dtype=torch.long, device=hidden.device)
    weight_t = weight.t()
    if hidden.device.type == "cpu":
        # one text at a time, real positions only: no padded rows are multiplied
        for i in range(texts):
            positions = torch.nonzero(mask[i], as_tuple=True)[0]
            rows = hidden[i, positions]
            for start in range(0, vocab, VOCAB_BLOCK):
                best, arg = (rows @ weight_t[:, start:start + VOCAB_BLOCK]).max(dim=0)
                values[i, start:start + VOCAB_BLOCK] = best
                where[i, start:start + VOCAB_BLOCK] = positions[arg]
    else:
        pad = ~mask.unsqueeze(-1)
        for start in range(0, vocab, VOCAB_BLOCK):
            block = (hidden @ weight_t[:, start:start + VOCAB_BLOCK]).masked_fill_(pad, float("-inf"))
            values[:, start:start + VOCAB_BLOCK], where[:, start:start + VOCAB_BLOCK] = block.max(dim=1)
    return values, where


class _SpladePool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, mask, weight, bias):
        values, where = masked_max(hidden.detach(), mask, weight.detach())
        z = values + bias.detach()
        ctx.save_for_backward(hidden, weight, where, z)
        return torch.log1p(torch.relu(z))

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, where, z = ctx.saved_tensors
        # d/dz log1p(relu(z)) = 1 / (1 + z) where z > 0, else 0
        grad_z = torch.where(z > 0, grad_out / (1 + z.clamp_min(0)), torch.zeros_like(z))
        text, term = torch.nonzero(grad_z, as_tuple=True)
        g = grad_z[text, term].unsqueeze(1)
        position = where[text, term]
        grad_hidden = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # index_add_, not index_put_(accumulate=True): on a CPU the latter adds in a varying order,
            # so the same step would give other weights from run to run
            grad_hidden = torch.zeros_like(hidden)
            grad_hidden.view(-1, hidden.shape[-1]).index_add_(0, text * hidden.shape[1] + position,
                                                               g * weight[term].to(hidden.dtype))
        if ctx.needs_input_grad[2]:
            grad_weight = torch.zeros_like(weight)
            grad_weight.index_add_(0, term, (g * hidden[text, position]).to(weight.dtype))
        if ctx.needs_input_grad[3]:
            grad_bias = grad_z.sum(dim=0).to(weight.dtype)
        return grad_hidden, None, grad_weight, grad_bias


def splade_pool(hidden: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(texts, V) SPLADE weights ``log1p(relu(max over masked positions of hidden @ weight.T + bias))``,
    differentiable in ``hidden``, ``weight`` and ``bias``. A text with no masked position gets zeros."""
    empty = ~mask.any(dim=1)
    if empty.any():
        mask = mask.clone()
        mask[empty, 0] = True
        return _SpladePool.apply(hidden, mask, weight, bias) * (~empty).unsqueeze(1).to(hidden.dtype)
    return _SpladePool.apply(hidden, mask, weight, bias)
