"""The objective: the model trained (:class:`SpladeModel`), the ranking loss with FLOPS
regularisation and its schedules, and the inference-free query side (:class:`QueryTable`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..encoding.loading import load_masked_lm
from ..encoding.model import tokenize
from ..indexing.query_table import MODEL_TABLE_FILE, corpus_idf, save_table


def lambda_at(step: int, lam: float, warmup: int) -> float:
    """The FLOPS weight at step ``step`` (from 0): ``lam * min(1, (step + 1) / warmup)^2``."""
    if warmup <= 0:
        return lam
    return lam * min(1.0, (step + 1) / warmup) ** 2


def lr_at(step: int, lr: float, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    return lr * max(0.0, (total - step) / max(1, total - warmup))


def flops(vectors):
    """The FLOPS regulariser: sum over terms of the squared mean weight over the batch."""
    return (vectors.abs().mean(dim=0) ** 2).sum()


class SpladeModel:
    """A masked LM as a differentiable SPLADE encoder, the same vectors as :class:`SpladeEncoder`."""

    def __init__(self, path: str, *, pooling: str = "all", new_head: bool = False, device: str = "cpu"):
        import torch

        self.path = path
        self.model, self.tokenizer = load_masked_lm(path, allow_new_head=new_head)
        self.model.to(device)
        self.device = torch.device(device)
        self.pooling = pooling
        keep = torch.ones(int(self.model.get_output_embeddings().weight.shape[0]), dtype=torch.float32)
        keep[sorted(set(self.tokenizer.all_special_ids))] = 0
        self.keep = keep.to(self.device)
        body = getattr(self.model, getattr(self.model, "base_model_prefix", ""), None)
        pred = getattr(getattr(self.model, "cls", None), "predictions", None)
        decoder = getattr(pred, "decoder", None)
        bias = None
        if decoder is not None:
            bias = decoder.bias if decoder.bias is not None else getattr(pred, "bias", None)
        # BERT-like heads (transform, then decoder): the memory-lean pooled head of splade_head
        self._fused = (body, pred.transform, decoder, bias) if body is not None and bias is not None \
            and hasattr(pred, "transform") and isinstance(decoder, torch.nn.Linear) else None

    def vectors(self, texts: Sequence[str], max_length: int):
        """(texts, V) SPLADE weights, differentiable."""
        import torch

        from ..encoding.head import splade_pool  # imports torch: deliberately lazy, as every torch import here

        batch = tokenize(self.tokenizer, texts, max_length).to(self.device)
        mask = batch["attention_mask"].bool()
        if self.pooling == "no-special":
            mask &= ~batch["special_tokens_mask"].bool()
        if self._fused is not None:
            body, transform, decoder, bias = self._fused
            hidden = transform(body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0])
            pooled = splade_pool(hidden, mask, decoder.weight, bias)
        else:
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            pooled = torch.log1p(torch.relu(logits.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)))
        return pooled * self.keep

    def save(self, folder: Path) -> None:
        """A Hugging Face checkpoint folder (config, model.safetensors, tokenizer files)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)


class QueryTable:
    """The inference-free query side: one weight per vocabulary entry, started from the IDF of the
    training corpus's tokens (the table ``idf`` trains against and ``learned`` trains), and each
    query's distinct token ids."""

    def __init__(self, model: SpladeModel, data, train_qids: list[str], *, max_length: int, query_max_length: int,
                 learned: bool):
        import torch

        vocab = int(model.model.get_output_embeddings().weight.shape[0])
        init = corpus_idf(model.tokenizer, list(data.corpus.values()), vocab, max_length)
        special = torch.tensor(sorted(set(model.tokenizer.all_special_ids)), dtype=torch.long)
        ids = model.tokenizer([data.queries[q] for q in data.queries], add_special_tokens=False,
                              truncation=True, max_length=query_max_length)["input_ids"]
        self.ids = {}
        for q, row in zip(data.queries, ids):
            u = torch.unique(torch.tensor(row, dtype=torch.long))
            self.ids[q] = u[~torch.isin(u, special)]
        # IDF divided by its mean over the training queries' tokens: a query token weighs about 1, as
        # the model's own query weights do. A ranking does not change with a query's scale, but the
        # softmax of the ranking loss does: raw IDF (2 to 9) saturates it, and the FLOPS term then
        # wins (measured on SciFact dev: 0.6106 after 2 epochs unscaled, documents down to 93 terms)
        used = torch.cat([self.ids[q] for q in train_qids])
        self.scale = float(torch.tensor(init)[used].mean())
        self.learned = learned
        self.weights = torch.tensor(init / self.scale, device=model.device)
        if learned:
            self.weights = torch.nn.Parameter(self.weights)

    def vectors(self, qids: list[str], device):
        """(queries, V) weights of the queries: each distinct token's table weight (``learned``: relu
        of the trained table, so a weight pushed below 0 drops the token)."""
        import torch

        rows = torch.cat([torch.full((len(self.ids[q]),), i, dtype=torch.long) for i, q in enumerate(qids)])
        cols = torch.cat([self.ids[q] for q in qids])
        table = torch.relu(self.weights)
        q = torch.zeros(len(qids), len(table), device=device, dtype=table.dtype)
        return q.index_put((rows.to(device), cols.to(device)), table[cols.to(device)])

    def save(self, folder: Path) -> None:
        """The learned table beside a model's weights (an ``idf`` table is the index's to compute)."""
        import torch

        if self.learned:
            save_table(torch.relu(self.weights.detach()).cpu().numpy(), folder / MODEL_TABLE_FILE)


def ranking_loss(model: SpladeModel, data, batch: tuple[list[str], list[str], list[str]], step: int, s,
                 lambda_warmup: int, query_table: QueryTable | None = None, teacher=None):
    """(loss, log) of one step's ``batch`` (qids, positives, documents): the cross-entropy of each
    query's positive against every document of the batch, judged documents other than its target
    masked out, plus the FLOPS terms weighted by the step's lambdas (``s``: the run's settings);
    with a ``teacher`` (:class:`~splade_lucene.training.teacher.HybridTeacher`), plus
    ``s.distill_weight`` times the KL divergence of the student's distribution over the batch from
    the teacher's."""
    import torch

    qids, positives, docs = batch
    torch.manual_seed(s.seed * 1_000_003 + step)  # dropout: a function of the step
    if s.query_mode == "full":
        q = model.vectors([data.queries[x] for x in qids], s.query_max_length or s.max_length)
    else:
        q = query_table.vectors(qids, model.device)
    texts = [data.positive_texts.get(q, data.corpus[x]) for q, x in zip(qids, docs)]
    texts += [data.corpus[x] for x in docs[len(qids):]]
    d = model.vectors(texts, s.max_length)
    raw = q @ d.t()
    # a batch document judged for the query (other than its target) is no negative of it
    judged = torch.tensor([[doc in data.judged[qid] and j != i for j, doc in enumerate(docs)]
                           for i, qid in enumerate(qids)], device=raw.device)
    scores = raw.masked_fill(judged, float("-inf"))
    target = torch.arange(len(qids), device=scores.device)
    rank = torch.nn.functional.cross_entropy(scores, target)
    kl = None
    if teacher is not None:
        # the teacher ranks the documents as the collection holds them: a pseudo-query's own document
        # with the query in it (masked, BM25 ranked it below the hard negatives BM25 chose)
        t = torch.as_tensor(teacher.logits([data.queries[x] for x in qids], [data.corpus[x] for x in docs],
                                           judged.cpu().numpy()), dtype=torch.float32, device=scores.device)
        # left-out entries: finite in both (exp of -1e4 is 0), so that 0 * (t - s) is 0, not nan
        student = torch.nn.functional.log_softmax(raw.masked_fill(judged, -1e4), dim=1)
        taught = torch.nn.functional.log_softmax(t.masked_fill(judged, -1e4), dim=1)
        kl = torch.nn.functional.kl_div(student, taught, log_target=True, reduction="batchmean")
        rank = rank + s.distill_weight * kl
    lq, ld = lambda_at(step, s.lambda_q, lambda_warmup), lambda_at(step, s.lambda_d, lambda_warmup)
    fq, fd = flops(q), flops(d)
    # inference-free: the query side has no encoder to sparsify (its weights come from the table)
    loss = rank + ld * fd + (lq * fq if s.query_mode == "full" else 0)
    log = {"step": step + 1, "loss": loss.item(), "rank": rank.item(), "flops_q": fq.item(), "flops_d": fd.item(),
           "lambda_q": lq, "lambda_d": ld, "nonzero_q": float((q > 0).sum(dim=1).float().mean()),
           "nonzero_d": float((d > 0).sum(dim=1).float().mean())}
    if kl is not None:
        log["kl"] = kl.item()
    return loss, log
