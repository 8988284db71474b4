"""What a run trains on: training pairs (from qrels, generated queries or pseudo-queries), the dev
part carved from them, BM25's hard negatives, the dev pool, and each step's batch."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.atomic import move_into_place, write_text
from ..encoding.model import has_words
from ..formats.collection import InputError, corpus_file, open_text, parse_line, read_corpus, read_queries
from ..formats.trec import read_qrels
from ..search.bm25 import BM25Searcher, build_bm25_index
from .settings import TrainingError


@dataclass
class TrainingData:
    """Queries with their positives: ``groups`` keep a document's generated queries together when
    the dev part is carved (no dev document is seen in training)."""

    corpus: dict[str, str]
    queries: dict[str, str]
    positives: dict[str, list[str]]
    judged: dict[str, set[str]]
    groups: dict[str, str]
    files: dict[str, Path]
    dropped: dict[str, int] = field(default_factory=dict)
    # the text a query's positive is trained with, where it is not the document's own (pseudo-queries)
    positive_texts: dict[str, str] = field(default_factory=dict)
    # pseudo-queries drawn again: a query's other draws (their qids are in queries, positives, judged
    # and positive_texts too, but not in groups: they are never carved into train or dev)
    variants: dict[str, list[str]] = field(default_factory=dict)

    def add(self, qid: str, text: str, positives: list[str], judged: set[str], group: str) -> None:
        self.queries[qid], self.positives[qid], self.judged[qid], self.groups[qid] = text, positives, judged, group

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def _corpus(folder: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    path = corpus_file(folder)
    if path is None:
        raise TrainingError(f"{folder} has no corpus.jsonl: training needs a BEIR-layout folder")
    texts, titles = {}, {}
    for doc in read_corpus(path):
        texts[doc.id] = doc.text
        titles[doc.id] = doc.title
    if not texts:
        raise TrainingError(f"{path} holds no documents (it is empty or blank)")
    return path, texts, titles


def qrels_pairs(folder: Path, split: str) -> TrainingData:
    """(query, positive) pairs from ``qrels/<split>.tsv``: judgments >= 1 are positives, and every
    judged document of a query (any grade) is kept out of its negatives."""
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise TrainingError(f"{folder} has no training split {qrels_file.name} (qrels splits there: "
                            f"{', '.join(have) or 'none'}); use --split, --queries-file or --pseudo-queries")
    if split == "test":
        raise TrainingError(f"refusing to train on {qrels_file}: the test split is for evaluation only")
    corpus_file, corpus, _ = _corpus(folder)
    queries_file = next((folder / n for n in ("queries.jsonl", "queries.jsonl.gz", "queries.tsv")
                         if (folder / n).is_file()), None)
    if queries_file is None:
        raise TrainingError(f"{folder} has no queries.jsonl")
    texts = dict(read_queries(queries_file))
    qrels = read_qrels(qrels_file)
    for qid, judged in qrels.items():
        if qid not in texts:
            raise TrainingError(f"{qrels_file}: query {qid!r} is not in {queries_file}")
        unknown = next((d for d in judged if d not in corpus), None)
        if unknown is not None:
            raise TrainingError(f"{qrels_file}: query {qid!r} judges document {unknown!r}, "
                                f"which is not in {corpus_file}")
    data = TrainingData(corpus, {}, {}, {}, {}, {"corpus": corpus_file, "queries": queries_file, "qrels": qrels_file})
    for qid, judged in qrels.items():
        positives = [d for d, rel in judged.items() if rel >= 1 and has_words(corpus[d])]
        if positives and has_words(texts[qid]):
            data.add(qid, texts[qid], positives, set(judged), qid)
        else:
            data.drop("queries without a positive or without words")
    return data


def generated_query_pairs(folder: Path, queries_file: str | Path) -> TrainingData:
    """(query, positive) pairs from generated queries: lines ``{"_id": doc id, "query": text}``
    (other fields ignored), ``.gz`` read as such. The document is the query's only judged one."""
    queries_file = Path(queries_file)
    if not queries_file.is_file():
        raise TrainingError(f"no such queries file: {queries_file}")
    corpus_file, corpus, _ = _corpus(folder)
    data = TrainingData(corpus, {}, {}, {}, {}, {"corpus": corpus_file, "queries_file": queries_file})
    with open_text(queries_file) as fh:
        for lineno, line in enumerate(fh, 1):
            obj = parse_line(line.encode("utf-8"), queries_file, lineno)
            if obj is None:
                continue
            docid, text = obj.get("_id"), obj.get("query")
            if not isinstance(docid, (str, int)) or not isinstance(text, str):
                raise InputError(f"{queries_file}:{lineno}: expected {{\"_id\": doc id, \"query\": text}}")
            docid = str(docid)
            if docid not in corpus:
                raise InputError(f"{queries_file}:{lineno}: document {docid!r} is not in {corpus_file}")
            if has_words(text) and has_words(corpus[docid]):
                data.add(f"gen-{lineno}", text, [docid], {docid}, docid)
            else:
                data.drop("pairs without words")
    if not data.queries:
        raise TrainingError(f"{queries_file} holds no usable (query, document) pair")
    return data


PSEUDO_MIN_WORDS = 8  # words a pseudo-query's positive keeps once its query is taken out
# the version of pseudo_query_pairs' rules, recorded with a model trained on them: the same settings
# draw other pairs under other rules, so such a model is not reused (2: spans read as prose; a title
# several documents carry is no query)
PSEUDO_RULES = 2
SPAN_MIN_WORDS, SPAN_MAX_WORDS = 4, 16  # a span pseudo-query's length: a fifth of the document, within these


def prose_word(word: str) -> bool:
    """A word as prose has them: two letters or more and no digit (not a date, code or page number)."""
    return _lettered(word) and not any(c.isdigit() for c in word)


def common_words(texts, share: float = 0.5) -> frozenset[str]:
    """The prose words (lowercased) in more than ``share`` of the texts: ``of``, ``the``, and the
    labels every record of a collection carries (CACM's ``CACM``, ``JB``, ``PM``), which say nothing
    of what a document is about."""
    df: Counter = Counter()
    n = 0
    for n, text in enumerate(texts, 1):
        df.update({w.lower() for w in text.split() if prose_word(w)})
    return frozenset(w for w, k in df.items() if k > share * n)


def word_span(words: list[str], rng, common: frozenset[str] = frozenset()) -> tuple[int, int] | None:
    """(start, end) of a span pseudo-query among a document's ``words``: ``len(words) // 5`` words,
    at least SPAN_MIN_WORDS and at most SPAN_MAX_WORDS, starting anywhere (drawn with ``rng``) where
    the span reads as prose and leaves at least PSEUDO_MIN_WORDS content words besides (prose words
    not in ``common``); None where no span does. Prose: no word with a digit, and at least three
    quarters of its words :func:`prose_word` (a record's metadata, ``1958 CA581103 JB March 22``,
    is no query; nor is a title whose record holds nothing else)."""
    length = min(SPAN_MAX_WORDS, max(SPAN_MIN_WORDS, len(words) // 5))
    if len(words) < length:
        return None

    def inside(flags: list[bool]) -> np.ndarray:  # how many flagged words each span holds
        counts = np.concatenate([[0], np.cumsum(flags)])
        return counts[length:] - counts[:len(counts) - length]

    flags = [prose_word(w) for w in words]
    content = [f and w.lower() not in common for f, w in zip(flags, words)]
    prose, digits = inside(flags), inside([any(c.isdigit() for c in w) for w in words])
    left = sum(content) - inside(content)
    starts = np.flatnonzero((left >= PSEUDO_MIN_WORDS) & (digits == 0) & (4 * prose >= 3 * length))
    if not len(starts):
        return None
    start = int(starts[int(rng.integers(len(starts)))])
    return start, start + length


def pseudo_query_pairs(folder: Path, seed: int, *, spans: bool = True, draws: int = 1) -> TrainingData:
    """(query, positive) pairs made from the corpus alone, for a collection without training queries.

    A document's title is its query where it has one: a title is a short statement of what the
    document is about, which is what a query is. A document without a title gets one of its own
    sentences, drawn with the seed (the inverse cloze task of Lee et al., 2019): a sentence of at
    least four words, most of them words rather than numbers or codes; with no such sentence, its
    first 16 words. The positive is the document with every occurrence of the query taken out, so
    that the pair is not solved by string matching; negatives are whole documents.

    Where that leaves the positive of a document without a title fewer than ``PSEUDO_MIN_WORDS``
    words (the only "sentence" of a text without sentence punctuation is the whole text), or where
    the document has no such sentence, another of its sentences that leaves enough is drawn, else a
    span of its words that reads as prose (:func:`word_span`: a fifth of the document, 4 to 16 words,
    placed with the seed), the positive keeping the words before and after it. These draws use their
    own random stream, so the documents that get a pair from a sentence get the same pair as before
    they existed (``spans=False``: no second draw, and the first 16 words, as before).
    A document still without a pair (too short,
    no words) gives none and stays a negative; the counts by reason are kept in ``dropped`` and
    named in the error when no document gives a pair.

    ``draws`` > 1: each document with a pair gets up to ``draws - 1`` other pseudo-queries (its
    other sentences that leave enough, then spans elsewhere in it), drawn from a third stream and kept
    in ``variants``; the first draw is the pair above, unchanged.
    """
    corpus_file, corpus, titles = _corpus(folder)
    # a title that several documents carry (ArguAna's topic tags, Cranfield's "note on creep
    # buckling of columns ." x 17) says what none of them alone is about: no query, nor its sentence
    counts = Counter(t.strip() for t in titles.values() if t.strip())
    shared = {t for t, n in counts.items() if n > 1}
    tags = {d: t.strip() for d, t in titles.items() if t.strip() in shared}
    titles = {d: "" if d in tags else t for d, t in titles.items()}
    rng = np.random.default_rng([seed, 7])
    fallback = np.random.default_rng([seed, 8])
    again = np.random.default_rng([seed, 9])
    data = TrainingData(corpus, {}, {}, {}, {}, {"corpus": corpus_file})
    common = common_words(corpus.values()) if spans or draws > 1 else frozenset()
    for docid, text in corpus.items():
        if not has_words(text):
            data.drop("documents without words")
            continue
        query = titles.get(docid, "").strip()
        sentences: list[str] = []
        if not query:
            body = text[len(tags[docid]):] if docid in tags and text.startswith(tags[docid]) else text
            sentences = [x for x in _sentences(body) if x not in shared]
            query = sentences[int(rng.integers(len(sentences)))] if sentences else " ".join(text.split()[:16])
        # the query is taken out of its positive (the inverse cloze task's masking): a document that
        # contains its query verbatim is found by string matching, the ranking loss is ~0 from the
        # first step, and the FLOPS term alone then drives the weights to zero
        rest = " ".join(text.replace(query, " ").split()) if query else ""
        if spans and not titles.get(docid, "").strip() and (
                not sentences or not has_words(query) or _words(rest) < PSEUDO_MIN_WORDS):
            query, rest = _fallback_pair(text, sentences, fallback, common)
        if query is None:
            if len(text.split()) < PSEUDO_MIN_WORDS + SPAN_MIN_WORDS:
                data.drop(f"documents too short for a span of words ({PSEUDO_MIN_WORDS + SPAN_MIN_WORDS} words needed)")
            else:  # dates, codes, names: a record's metadata is no query
                data.drop("documents without a span of words that reads as prose and leaves enough")
            continue
        if not has_words(query) or _words(rest) < PSEUDO_MIN_WORDS:
            # a title-only record (its rest is an author, a date, codes) would teach the model to
            # match a title to nothing; it stays in the corpus as a negative
            data.drop(f"documents with fewer than {PSEUDO_MIN_WORDS} words besides the pseudo-query")
            continue
        qid = f"pseudo-{len(data.groups)}"
        data.add(qid, query, [docid], {docid}, docid)
        data.positive_texts[qid] = rest
        if draws > 1:
            _draw_again(data, qid, text, sentences, draws - 1, again, common, shared)
    if not data.queries:
        reasons = "; ".join(f"{n:,} {reason}" for reason, n in sorted(data.dropped.items()))
        hint = "" if spans else (": a text without sentence punctuation is one sentence, all of it; spans of words "
                                 "(the default, without --no-pseudo-spans) make pairs from such documents")
        raise TrainingError(f"{corpus_file}: no document gives a pseudo-query ({reasons}){hint}")
    return data


def _draw_again(data: TrainingData, qid: str, text: str, sentences: list[str], n: int, rng,
                common: frozenset[str], shared: set[str]) -> None:
    """Up to ``n`` more pseudo-queries for ``qid``'s document, none equal to one it has: its other
    sentences that leave enough words, in an order drawn with ``rng``, then spans of its words."""
    docid, taken = data.positives[qid][0], {data.queries[qid]}
    if not sentences:  # a document whose title was its query: its text's sentences
        sentences = [x for x in _sentences(text) if x not in shared]
    pairs = []
    for i in rng.permutation(len(sentences)).tolist():
        rest = " ".join(text.replace(sentences[i], " ").split())
        if sentences[i] not in taken and has_words(sentences[i]) and _words(rest) >= PSEUDO_MIN_WORDS:
            pairs.append((sentences[i], rest))
            taken.add(sentences[i])
    words = text.split()
    for _ in range(4 * n):  # spans at places drawn anew; a document with few places has few spans
        if len(pairs) >= n:
            break
        span = word_span(words, rng, common)
        if span is not None and " ".join(words[span[0]:span[1]]) not in taken:
            query = " ".join(words[span[0]:span[1]])
            pairs.append((query, " ".join(words[:span[0]] + words[span[1]:])))
            taken.add(query)
    for j, (query, rest) in enumerate(pairs[:n], 1):
        variant = f"{qid}~{j}"
        data.queries[variant], data.positives[variant], data.judged[variant] = query, [docid], {docid}
        data.positive_texts[variant] = rest
        data.variants.setdefault(qid, []).append(variant)


def _sentences(text: str) -> list[str]:
    """A text's sentences (split after . ! ?) that are :func:`_wordy`."""
    import re

    return [x.strip() for x in re.split(r"(?<=[.!?])\s+", text) if _wordy(x)]


def _fallback_pair(text: str, sentences: list[str], rng, common: frozenset[str]) -> tuple[str | None, str]:
    """A pseudo-query and its positive for a document whose first choice leaves too little: another
    sentence that leaves enough, drawn with ``rng``, else a span of its words; (None, "") if none."""
    usable = [(x, " ".join(text.replace(x, " ").split())) for x in sentences]
    usable = [(x, rest) for x, rest in usable if _words(rest) >= PSEUDO_MIN_WORDS]
    if usable:
        return usable[int(rng.integers(len(usable)))]
    words = text.split()
    span = word_span(words, rng, common)
    if span is None:
        return None, ""
    return " ".join(words[span[0]:span[1]]), " ".join(words[:span[0]] + words[span[1]:])


def _words(text: str) -> int:
    """The tokens with at least two letters (words rather than numbers or codes)."""
    return sum(1 for t in text.split() if _lettered(t))


def _lettered(word: str) -> bool:
    """Two letters or more: a word rather than a number or a one-letter initial."""
    return sum(c.isalpha() for c in word) >= 2


def _wordy(sentence: str) -> bool:
    """At least four words with letters, and they are most of the sentence's tokens."""
    words = _words(sentence)
    return words >= 4 and words >= 0.6 * len(sentence.split())


def carve_dev(data: TrainingData, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train qids, dev qids): a ``fraction`` of the groups (queries, or documents for generated
    queries), drawn with the seed; both lists in the data's order."""
    groups = sorted(set(data.groups.values()))
    n_dev = int(round(fraction * len(groups)))
    chosen = set(np.random.default_rng([seed, 1]).permutation(len(groups))[:n_dev].tolist())
    dev_groups = {g for i, g in enumerate(groups) if i in chosen}
    train = [q for q in data.groups if data.groups[q] not in dev_groups]
    dev = [q for q in data.groups if data.groups[q] in dev_groups]
    return train, dev


class TrainingSet:
    """What a run trains on: the pairs (:func:`qrels_pairs`, :func:`generated_query_pairs`,
    :func:`pseudo_query_pairs`), the dev part carved from them, the steps they make, the hard
    negatives mined with BM25, the dev pool, and each step's batch (a function of seed and step)."""

    def __init__(self, folder: Path, settings):
        s = self.settings = settings
        self.negatives: dict[str, list[str]] = {}  # chosen by choose_negatives
        if s.pairs == "queries-file":
            self.data = generated_query_pairs(folder, s.queries_file)
        elif s.pairs == "pseudo":
            self.data = pseudo_query_pairs(folder, s.seed, spans=s.pseudo_spans, draws=s.pseudo_draws)
        else:
            self.data = qrels_pairs(folder, s.split)
        self.train_qids, self.dev_qids = carve_dev(self.data, s.dev_fraction, s.seed)
        if len(self.train_qids) < s.batch_size:
            raise TrainingError(f"only {len(self.train_qids)} training queries after carving the dev part "
                                f"({len(self.dev_qids)}), fewer than --batch-size {s.batch_size}: "
                                "lower --batch-size or --dev-fraction")
        self.steps_per_epoch = len(self.train_qids) // s.batch_size
        total = s.epochs * self.steps_per_epoch
        self.total_steps = min(total, s.max_steps) if s.max_steps is not None else total
        self.warmup = s.warmup_steps if s.warmup_steps is not None else self.total_steps // 10
        self.lambda_warmup = s.lambda_warmup_steps if s.lambda_warmup_steps is not None else self.total_steps // 3
    def mine(self, work: Path) -> dict[str, list[str]]:
        """BM25's top documents for every train and dev query (judged ones kept: dev pools use them),
        cached in the work folder."""
        cache = work / "bm25-hits.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        depth = max(self.settings.negatives_depth + 20, self.settings.dev_depth)
        index = work / "bm25-index"
        build_bm25_index(self.data.files["corpus"], index, overwrite=True)
        searcher = BM25Searcher(index)
        # only the queries the run will see: --max-steps may stop long before an epoch ends
        used = set(self.dev_qids)
        if self.total_steps < self.steps_per_epoch:
            for step in range(self.total_steps):
                used.update(self.batch_queries(step))
        else:
            used.update(self.train_qids)
        used.update(v for q in list(used) for v in self.data.variants.get(q, ()))
        queries = [(q, self.data.queries[q]) for q in self.train_qids + self.dev_qids if q in used]
        queries += [(v, self.data.queries[v]) for q in self.train_qids for v in self.data.variants.get(q, ())
                    if v in used]
        found: dict[str, list[str]] = {}
        try:
            # in slices: each hit crosses JNI as an object, so a whole set of generated queries at
            # once (25,844 x 120 hits for ArguAna) would hold millions of them
            for start in range(0, len(queries), 1000):
                chunk = queries[start:start + 1000]
                hits = searcher.batch_search(chunk, k=depth, threads=max(1, min(4, os.cpu_count() or 1)))
                found.update({q: [h.docid for h in hits.get(q, [])] for q, _ in chunk})
        finally:
            searcher.close()
        write_text(cache, json.dumps(found, indent=1, sort_keys=True) + "\n")
        shutil.rmtree(index, ignore_errors=True)
        return found

    def choose_negatives(self, bm25: dict[str, list[str]]) -> None:
        """Each training query's hard negatives: BM25's top ``negatives_depth`` less its judged
        documents and documents without words."""
        s = self.settings
        self.negatives = {}
        if s.negatives == "bm25":
            for q in [*self.train_qids, *(v for q in self.train_qids for v in self.data.variants.get(q, ()))]:
                judged = self.data.judged[q]
                self.negatives[q] = [d for d in bm25.get(q, ()) if d not in judged
                                     and has_words(self.data.corpus[d])][:s.negatives_depth]

    def write_dev_pool(self, work: Path, bm25: dict[str, list[str]]) -> Path:
        """The dev documents (the dev queries' judged ones and BM25's top ``dev_depth`` for each) as
        a corpus file, with the dev queries and qrels."""
        dev = work / "dev"
        if not self.dev_qids or (dev / "qrels.tsv").is_file():
            return dev
        tmp = work / "dev.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        pool: dict[str, None] = {}
        for q in self.dev_qids:
            for d in [*sorted(self.data.judged[q]), *bm25.get(q, [])[:self.settings.dev_depth]]:
                pool.setdefault(d, None)
        # a pseudo-query's document is in the pool as it is trained on, without its query: with the
        # query left in, every model finds it by string matching and the dev score says nothing
        masked = {self.data.positives[q][0]: self.data.positive_texts[q]
                  for q in self.dev_qids if q in self.data.positive_texts}
        with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as fh:
            for d in pool:
                fh.write(json.dumps({"_id": d, "text": masked.get(d, self.data.corpus[d])}) + "\n")
        with open(tmp / "queries.tsv", "w", encoding="utf-8") as fh:
            for q in self.dev_qids:
                fh.write(f"{q}\t{' '.join(self.data.queries[q].split())}\n")
        with open(tmp / "qrels.tsv", "w", encoding="utf-8") as fh:
            for q in self.dev_qids:
                for d in self.data.positives[q]:
                    fh.write(f"{q}\t0\t{d}\t1\n")
        move_into_place(tmp, dev)
        return dev

    def batch_queries(self, step: int) -> list[str]:
        """The qids of a step's batch: the seed's permutation of the training queries for its epoch."""
        s = self.settings
        epoch, index = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([s.seed, 2, epoch]).permutation(len(self.train_qids))
        return [self.train_qids[i] for i in order[index * s.batch_size:(index + 1) * s.batch_size]]

    def drawn(self, qid: str, step: int) -> str:
        """The query trained for ``qid`` at ``step``: with pseudo-queries drawn again, epoch e takes
        the document's draw e modulo its number of draws (the first draw in epoch 0)."""
        variants = self.data.variants.get(qid)
        if not variants:
            return qid
        draw = (step // self.steps_per_epoch) % (len(variants) + 1)
        return qid if draw == 0 else variants[draw - 1]

    def batch(self, step: int) -> tuple[list[str], list[str], list[str]]:
        """(qids, their positives, the batch's documents: positives first, then negatives) of a step;
        a function of (seed, step) only."""
        s = self.settings
        qids = [self.drawn(q, step) for q in self.batch_queries(step)]
        rng = np.random.default_rng([s.seed, 3, step])
        positives = [self.data.positives[q][int(rng.integers(len(self.data.positives[q])))] for q in qids]
        docs = list(positives)
        if s.negatives == "bm25" and s.negatives_per_query:
            for q in qids:
                pool = self.negatives[q]
                if pool:
                    picks = rng.choice(len(pool), size=min(s.negatives_per_query, len(pool)), replace=False)
                    docs.extend(pool[int(i)] for i in sorted(picks.tolist()))
        return qids, positives, docs

