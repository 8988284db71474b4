"""The encoder's backends behind one interface: ``forward(batch)`` turns a padded, tokenized batch
into a :class:`~splade_lucene.encoding.pooling.SparseVector` per row; each exposes its ``tokenizer``,
``vocab_size`` and ``model`` (None for ONNX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import NotFoundError, SettingError
from .loading import (
    ONNX_FILE,
    ONNX_OUTPUTS,
    ModelError,
    load_masked_lm,
    onnx_session,
    read_onnx_meta,
    read_sparse_head,
)
from .pooling import (
    PROJECTION_CHUNK_ROWS,
    ROW_BUCKET,
    VOCAB_BLOCK,
    SparseVector,
    accumulate_max_logits,
    dense_to_sparse,
    pad_rows,
    splade_max_pool,
)


class TorchBackend:
    """A masked LM through torch. For BERT-like models the body and the head are split so that the
    head runs on real positions only, fused with the pooling, block by block of the vocabulary;
    other heads project in row chunks. The pooling is the folder's
    (:class:`~splade_lucene.encoding.loading.SparseHead`): max (default) or sum of log(1 + relu), or
    of log(1 + log(1 + relu)) (sentence-transformers' ``log1p_relu``)."""

    def __init__(self, model_path: str, *, device, dtype: str, pooling: str):
        import torch

        self.model_path, self.device, self.dtype, self.pooling = model_path, device, dtype, pooling

        path = Path(self.model_path)
        looks_local = path.is_absolute() or self.model_path.startswith((".", "~")) or path.exists()
        if looks_local and not path.is_dir():
            raise NotFoundError(f"model path {self.model_path} does not exist (expected a folder "
                                    "with config.json, tokenizer and weights of a masked language model)")
        self.head = read_sparse_head(self.model_path)
        self.model, self.tokenizer = load_masked_lm(self.model_path, any_head=True, head=self.head)
        self.model.eval().to(self.device)
        self.on_gpu = self.device.type != "cpu"
        if self.on_gpu and self.dtype == "bf16":
            self.model.to(torch.bfloat16)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.special_ids = np.array(sorted(set(self.tokenizer.all_special_ids)), dtype=np.int64)
        self._torch = torch
        # BERT-like models: body + head split, so the head runs on real tokens only.
        self._head = getattr(self.model, "cls", None)
        self._body = getattr(self.model, getattr(self.model, "base_model_prefix", ""), None)
        self._fused = self._fused_head() if self._body is not None else None

    def _fused_head(self):
        """(transform, weight blocks, bias) of a BERT prediction head, or None for other heads."""
        torch = self._torch
        pred = getattr(self._head, "predictions", None)
        decoder = getattr(pred, "decoder", None)
        if pred is None or not hasattr(pred, "transform") or not isinstance(decoder, torch.nn.Linear):
            return None
        bias = decoder.bias if decoder.bias is not None else getattr(pred, "bias", None)
        if bias is None:
            return None
        proj_dtype = torch.bfloat16 if self.dtype == "bf16" else torch.float32
        weight_t = decoder.weight.detach().t().to(proj_dtype)  # (hidden, vocab)
        blocks = [weight_t[:, v:v + VOCAB_BLOCK].contiguous() for v in range(0, self.vocab_size, VOCAB_BLOCK)]
        return pred.transform, blocks, bias.detach().float()

    def forward(self, batch) -> list[SparseVector]:
        """One padded batch (input_ids, attention_mask, special_tokens_mask) through the model and
        the SPLADE pooling, a vector per row."""
        torch = self._torch
        texts = range(batch["input_ids"].shape[0])
        mask = batch["attention_mask"].bool()
        if self.pooling == "no-special":
            mask &= ~batch["special_tokens_mask"].bool()
        with torch.inference_mode():
            if self.head.pooling == "sum":
                pooled = self._sum_pool(batch, mask)
            elif self._fused is not None:
                hidden = self._fused[0](self._body(input_ids=batch["input_ids"],
                                                   attention_mask=batch["attention_mask"])[0])
                if self.on_gpu:
                    pooled = self._padded_max_pool(hidden, mask)
                else:
                    pooled = self._fused_max_pool(hidden[mask], mask.sum(dim=1).tolist())
            elif self._head is not None and self._body is not None:
                hidden = self._body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
                rows = hidden[mask]
                owner = torch.nonzero(mask, as_tuple=True)[0]
                pooled = torch.zeros((len(texts), self.vocab_size), dtype=torch.float32, device=self.device)
                for start in range(0, rows.shape[0], PROJECTION_CHUNK_ROWS):
                    logits = self._head(rows[start:start + PROJECTION_CHUNK_ROWS])
                    accumulate_max_logits(logits, owner[start:start + PROJECTION_CHUNK_ROWS], pooled)
                pooled = torch.log1p(pooled)
            else:
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                owner = torch.nonzero(mask, as_tuple=True)[0]
                pooled = splade_max_pool(logits[mask], owner, len(texts))
            if self.head.pooling == "max" and self.head.activation == "log1p_relu":
                pooled = torch.log1p(pooled)  # monotone: the max of log1p is log1p of the max
        return dense_to_sparse(pooled.cpu().numpy(), self.special_ids)

    def _activate(self, logits):
        """The folder's activation at each position: log(1 + relu), once more log1p for log1p_relu."""
        out = self._torch.log1p(self._torch.relu(logits.float()))
        return self._torch.log1p(out) if self.head.activation == "log1p_relu" else out

    def _sum_pool(self, batch, mask):
        """Sum pooling: the activation at every pooled position, summed per text (it does not commute
        with the activation, so each position's logits are activated before they are added), in
        chunks of rows so that no more than PROJECTION_CHUNK_ROWS rows of logits exist at once."""
        torch = self._torch
        n = batch["input_ids"].shape[0]
        pooled = torch.zeros((n, self.vocab_size), dtype=torch.float32, device=self.device)
        if self._body is not None and self._head is not None:
            rows = self._body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0][mask]
            project = self._head
        else:
            rows = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[mask]
            project = None
        owner = torch.nonzero(mask, as_tuple=True)[0]
        for start in range(0, rows.shape[0], PROJECTION_CHUNK_ROWS):
            chunk = rows[start:start + PROJECTION_CHUNK_ROWS]
            logits = project(chunk) if project is not None else chunk
            pooled.index_add_(0, owner[start:start + PROJECTION_CHUNK_ROWS], self._activate(logits))
        return pooled

    def _fused_max_pool(self, rows, counts: list[int]):
        """log1p(relu(max over a text's rows of (row @ W + b))), block by block.

        ``rows``: the head's transform applied to the real positions, text after text (``counts``
        rows each).

        The bias is the same for every row, so it is added after the max; relu and log1p are
        monotone, so they are applied once per text and term. Each text's rows are padded with copies
        of its first row to a multiple of ROW_BUCKET (the max is unchanged), so the matrix products
        take few distinct shapes and the math library's per-shape caches stay small while a corpus
        streams through.
        """
        torch = self._torch
        _, blocks, bias = self._fused
        segments = [pad_rows(seg, ROW_BUCKET) for seg in torch.split(rows.to(blocks[0].dtype), counts)]
        pooled = torch.full((len(counts), self.vocab_size), float("-inf"), dtype=torch.float32, device=self.device)
        start = 0
        for block in blocks:
            end = start + block.shape[1]
            for i, seg in enumerate(segments):
                if seg.shape[0]:
                    pooled[i, start:end] = (seg @ block).amax(dim=0)
            start = end
        return torch.log1p(torch.relu(pooled + bias))

    def _padded_max_pool(self, hidden, mask):
        """GPU form of :meth:`_fused_max_pool`: one batched product per vocabulary block over the
        padded (texts, positions) grid, padding masked to -inf before the max. Fewer, larger kernels
        suit a GPU; on a CPU the per-text form is faster and never holds a batch's logits block."""
        torch = self._torch
        _, blocks, bias = self._fused
        hidden = hidden.to(blocks[0].dtype)
        pad = ~mask.unsqueeze(-1)
        pooled = torch.empty((hidden.shape[0], self.vocab_size), dtype=torch.float32, device=self.device)
        start = 0
        for block in blocks:
            end = start + block.shape[1]
            pooled[:, start:end] = (hidden @ block).masked_fill_(pad, float("-inf")).amax(dim=1)
            start = end
        return torch.log1p(torch.relu(pooled + bias))


class OnnxBackend:
    """onnxruntime on the CPU over a folder written by ``export-onnx``: the graph holds the SPLADE
    head and returns each text's non-zero terms."""

    def __init__(self, model_path: str, *, device, dtype: str, pooling: str, threads: int | None):
        from transformers import AutoTokenizer

        self.model_path, self.device, self.dtype, self.pooling = model_path, device, dtype, pooling
        self.threads = threads
        if self.device.type != "cpu":
            raise SettingError(f"the ONNX backend runs on the CPU (onnxruntime's CPU provider), not {self.device}")
        if self.dtype != "fp32":
            raise SettingError("the ONNX backend computes in fp32 (dtype 'fp32')")
        meta = read_onnx_meta(self.model_path)
        if meta.get("pooling", "all") != self.pooling:
            raise SettingError(f"{self.model_path} was exported with pooling {meta.get('pooling')!r}, not "
                               f"{self.pooling!r}: export again with --pooling {self.pooling}")
        self._session = onnx_session(Path(self.model_path) / ONNX_FILE, self.threads)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.vocab_size = int(meta["vocab_size"])
        if len(self.tokenizer) > self.vocab_size:
            raise ModelError(f"{self.model_path}: the tokenizer has {len(self.tokenizer)} entries but the graph's "
                             f"vocabulary {self.vocab_size}")
        self.special_ids = np.array(sorted(set(self.tokenizer.all_special_ids)), dtype=np.int64)
        self.model = None

    def forward(self, batch) -> list[SparseVector]:
        ids = batch["input_ids"].cpu().numpy().astype(np.int64)
        mask = batch["attention_mask"].cpu().numpy().astype(np.int64)
        types = batch["token_type_ids"].cpu().numpy().astype(np.int64) if "token_type_ids" in batch \
            else np.zeros_like(ids)
        idx, weights = self._session.run(list(ONNX_OUTPUTS), {"input_ids": ids, "token_type_ids": types,
                                                                "attention_mask": mask})
        rows, cols = np.divmod(idx.astype(np.int64), self.vocab_size)  # flat (row * vocab + id) indices
        out = []
        for r in range(ids.shape[0]):
            pick = rows == r
            c, w = cols[pick], weights[pick].astype(np.float32)
            keep = ~np.isin(c, self.special_ids) & (w > 0)
            order = np.argsort(c[keep], kind="stable")
            out.append(SparseVector(c[keep][order], w[keep][order]))
        return out
