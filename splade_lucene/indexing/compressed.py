"""Compressed, impact-tiered postings and the exact top-k kernels of the memory engine.

Layout (every array flat, so that the whole table memory-maps from ``.npy`` files):

- each term's postings are cut into **tiers** by impact (the highest ones first, tiers growing four
  times at each step down; see :func:`tier_cuts`), and a tier whose impacts span 256 values or more
  is cut again, so every tier (a *run*) stores its impacts as one byte above its base impact;
- each run's postings are in document order, in **blocks** of :data:`BLOCK` postings: a block keeps
  its first document number and the gaps to the next ones, in 1, 2 or 4 bytes as the block's widest
  gap needs (three gap arrays, one per width, so reads stay aligned).

About 2.5 bytes a posting for a SPLADE index of 100k documents or more: 1 for the impact, 1 for most
gaps, and 17 bytes a block (128 postings) of bookkeeping.

Search (:func:`search`) is term-at-a-time over runs in order of their score bound (query weight x the
run's highest impact), into one integer accumulator per document. With pruning on, it stops reading
whole runs once the bound of everything left, ``R``, is below ``theta``, a k-th best partial score
(partial scores only grow, so theta is at most the final k-th score): a document not yet seen then
cannot reach the top k. The documents seen whose partial score plus ``R`` reaches theta are completed
exactly by looking them up in the runs left (document order, block by block), and dropped as soon
as their bound falls below theta. So the result is exact: the same documents, integer scores and
order (score, then the caller's tie rank) as exhaustive scoring, which :func:`search` also does
(``prune=False``), reading every run.

Either way the runs read between two checks are added together a slice of :data:`CHUNK` documents
at a time: each run adds the blocks starting in the slice, so the accumulator's slice stays in the
L1 cache instead of every run sweeping the whole accumulator (2.4x faster at 100k documents,
measured); exhaustive scoring also collects each slice as soon as it is complete (its documents
reaching the running k-th best kept, its accumulator zeroed), so the accumulator is read once.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

BLOCK = 128
# a term's tiers: the top 1/4**j of its postings for j = J..1 (each at least MIN_TIER postings), then the rest
TIER_RATIO = 4
MIN_TIER = 64
# a lookup of one candidate in one run costs about this many postings read in order (measured)
PROBE_COST = 8
# postings are added to the accumulator this many documents at a time (its slice stays in the L1 cache)
CHUNK = 8192
# a pruning check (the k-th best partial score, the candidates) reads the whole accumulator: checks are
# spaced by the postings read since the last one, at most CHECK_EVERY x the number of documents apart
CHECK_EVERY = 2.0


# ---- encoding -----------------------------------------------------------------------------------

@numba.njit(cache=True)
def _term_runs(impacts):
    """(lo, hi) impact bounds of a term's runs (a term of at least one posting), highest first: tier
    cuts at the ranks df / 4**j, moved to impact values (equal impacts share a run), then split
    where a run would span 256 values."""
    ranked = np.sort(impacts).astype(np.int64)[::-1]
    df = len(ranked)
    cuts = []  # the lowest impact of each tier but the last
    rank = df // TIER_RATIO
    ranks = []
    while rank >= MIN_TIER:
        ranks.append(rank)
        rank //= TIER_RATIO
    for i in range(len(ranks) - 1, -1, -1):
        value = ranked[ranks[i] - 1]
        if value > ranked[df - 1] and (len(cuts) == 0 or value < cuts[-1]):
            cuts.append(value)
    lows = np.empty(len(cuts) + 1, dtype=np.int64)
    highs = np.empty(len(cuts) + 1, dtype=np.int64)
    top = ranked[0]
    for i in range(len(cuts)):
        lows[i] = cuts[i]
        highs[i] = top
        top = cuts[i] - 1
    lows[len(cuts)] = ranked[df - 1]
    highs[len(cuts)] = top
    ascending = ranked[::-1]
    out_lo = []
    out_hi = []
    for i in range(len(lows)):
        hi = highs[i]
        while hi >= lows[i]:
            lo = max(lows[i], hi - 255)
            # a slice of a wide tier may hold no impact: no run for it
            if np.searchsorted(ascending, hi, side="right") > np.searchsorted(ascending, lo, side="left"):
                out_lo.append(lo)
                out_hi.append(hi)
            hi = lo - 1
    return out_lo, out_hi


@numba.njit(cache=True)
def _width(gap):
    return 0 if gap < 256 else 1 if gap < 65536 else 2


@numba.njit(cache=True)
def _members(impacts, lo, hi, low, high):
    """The postings lo..hi of a term whose impact is in [low, high], in document order."""
    members = np.empty(hi - lo, dtype=np.int64)
    m = 0
    for p in range(lo, hi):
        if low <= impacts[p] <= high:
            members[m] = p
            m += 1
    return members[:m]


@numba.njit(cache=True)
def _block_width(docs, members, start, end):
    """The gap width (0, 1, 2: 1, 2, 4 bytes) of the block of postings members[start:end]."""
    widest = 0
    for i in range(start + 1, end):
        widest = max(widest, np.int64(docs[members[i]]) - np.int64(docs[members[i - 1]]))
    return _width(widest)


@numba.njit(cache=True)
def _plan(offsets, docs, impacts):
    """Sizes of the encoded table: runs, blocks and gap bytes of each width (the walk of :func:`_fill`)."""
    n_runs = 0
    n_blocks = 0
    gaps = np.zeros(3, dtype=np.int64)
    for t in range(len(offsets) - 1):
        lo, hi = offsets[t], offsets[t + 1]
        if hi == lo:  # a term without postings: no run
            continue
        r_lo, r_hi = _term_runs(impacts[lo:hi])
        for r in range(len(r_lo)):
            members = _members(impacts, lo, hi, r_lo[r], r_hi[r])
            n_runs += 1
            for start in range(0, len(members), BLOCK):
                end = min(start + BLOCK, len(members))
                gaps[_block_width(docs, members, start, end)] += end - start - 1
                n_blocks += 1
    return n_runs, n_blocks, gaps


@numba.njit(cache=True)
def _fill(offsets, docs, impacts, term_runs, run_max, run_base, run_block, block_first, block_post, block_gap,
          block_width, values, gaps8, gaps16, gaps32):
    run = 0
    block = 0
    post = 0
    fill = np.zeros(3, dtype=np.int64)
    for t in range(len(offsets) - 1):
        lo, hi = offsets[t], offsets[t + 1]
        term_runs[t] = run
        if hi == lo:  # a term without postings: no run
            continue
        r_lo, r_hi = _term_runs(impacts[lo:hi])
        for r in range(len(r_lo)):
            run_base[run] = r_lo[r]
            run_block[run] = block
            members = _members(impacts, lo, hi, r_lo[r], r_hi[r])
            m = len(members)
            true_max = 0
            for start in range(0, m, BLOCK):
                end = min(start + BLOCK, m)
                w = _block_width(docs, members, start, end)
                block_first[block] = docs[members[start]]
                block_post[block] = post
                block_gap[block] = fill[w]
                block_width[block] = w
                for i in range(start, end):
                    p = members[i]
                    values[post] = impacts[p] - r_lo[r]
                    true_max = max(true_max, impacts[p])
                    post += 1
                    if i > start:
                        gap = np.int64(docs[p]) - np.int64(docs[members[i - 1]])
                        if w == 0:
                            gaps8[fill[0]] = gap
                        elif w == 1:
                            gaps16[fill[1]] = gap
                        else:
                            gaps32[fill[2]] = gap
                        fill[w] += 1
                block += 1
            run_max[run] = true_max
            run += 1
    term_runs[len(offsets) - 1] = run
    run_block[run] = block
    block_post[block] = post


def encode(offsets: np.ndarray, docs: np.ndarray, impacts: np.ndarray) -> dict[str, np.ndarray]:
    """The compressed arrays of a term-major table (``offsets`` per term into ``docs``, each term's
    documents ascending, ``impacts`` at least 1)."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    docs = np.ascontiguousarray(docs)
    impacts = np.ascontiguousarray(impacts)
    if len(impacts) and int(impacts.min()) < 1:
        raise ValueError("impacts must be at least 1")
    n_terms = len(offsets) - 1
    n_runs, n_blocks, gaps = _plan(offsets, docs, impacts)
    out = {
        "term_runs": np.zeros(n_terms + 1, dtype=np.int64),
        "run_max": np.zeros(n_runs, dtype=np.int32),
        "run_base": np.zeros(n_runs, dtype=np.int32),
        "run_block": np.zeros(n_runs + 1, dtype=np.int64),
        "block_first": np.zeros(n_blocks, dtype=np.int32),
        "block_post": np.zeros(n_blocks + 1, dtype=np.int64),
        "block_gap": np.zeros(n_blocks, dtype=np.int64),
        "block_width": np.zeros(n_blocks, dtype=np.uint8),
        "values": np.zeros(len(docs), dtype=np.uint8),
        "gaps8": np.zeros(gaps[0], dtype=np.uint8),
        "gaps16": np.zeros(gaps[1], dtype=np.uint16),
        "gaps32": np.zeros(gaps[2], dtype=np.uint32),
    }
    _fill(offsets, docs, impacts, out["term_runs"], out["run_max"], out["run_base"], out["run_block"],
          out["block_first"], out["block_post"], out["block_gap"], out["block_width"], out["values"],
          out["gaps8"], out["gaps16"], out["gaps32"])
    return out


ARRAYS = ("term_runs", "run_max", "run_base", "run_block", "block_first", "block_post", "block_gap",
          "block_width", "values", "gaps8", "gaps16", "gaps32")


class Table(NamedTuple):
    """The arrays of an encoded table (:func:`encode`), as the kernels take them: one record."""

    term_runs: np.ndarray
    run_max: np.ndarray
    run_base: np.ndarray
    run_block: np.ndarray
    block_first: np.ndarray
    block_post: np.ndarray
    block_gap: np.ndarray
    block_width: np.ndarray
    values: np.ndarray
    gaps8: np.ndarray
    gaps16: np.ndarray
    gaps32: np.ndarray


def table(arrays: dict[str, np.ndarray] | Table) -> Table:
    """The :class:`Table` of ``arrays`` (a dict of :data:`ARRAYS`, or a table already)."""
    return arrays if isinstance(arrays, Table) else Table(*(arrays[name] for name in ARRAYS))


# ---- decoding -----------------------------------------------------------------------------------

@numba.njit(cache=True, inline="always")
def _gap(w, at, tab):
    if w == 0:
        return np.int64(tab.gaps8[at])
    if w == 1:
        return np.int64(tab.gaps16[at])
    return np.int64(tab.gaps32[at])


@numba.njit(cache=True, nogil=True)
def _decode_term(t, tab, out_docs, out_impacts):
    """A term's postings (all its runs, run by run: not in document order); returns how many."""
    n = 0
    for r in range(tab.term_runs[t], tab.term_runs[t + 1]):
        base = tab.run_base[r]
        for b in range(tab.run_block[r], tab.run_block[r + 1]):
            doc = np.int64(tab.block_first[b])
            at = tab.block_gap[b]
            w = tab.block_width[b]
            for p in range(tab.block_post[b], tab.block_post[b + 1]):
                if p > tab.block_post[b]:
                    doc += _gap(w, at, tab)
                    at += 1
                out_docs[n] = doc
                out_impacts[n] = tab.values[p] + base
                n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _decode_all(tab, offsets, out_docs, out_impacts):
    for t in range(len(offsets) - 1):
        lo, hi = offsets[t], offsets[t + 1]
        _decode_term(t, tab, out_docs[lo:hi], out_impacts[lo:hi])


def all_postings(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every posting, term-major: (offsets per term and the end, documents int32, impacts int32); a
    term's postings run by run (not in document order)."""
    a = arrays
    posts = a["block_post"][a["run_block"][a["term_runs"]]]
    offsets = np.asarray(posts, dtype=np.int64) - int(posts[0])
    docs = np.empty(int(offsets[-1]), dtype=np.int32)
    impacts = np.empty(int(offsets[-1]), dtype=np.int32)
    _decode_all(table(a), offsets, docs, impacts)
    return offsets, docs, impacts


def term_postings(arrays: dict[str, np.ndarray], term: int) -> tuple[np.ndarray, np.ndarray]:
    """One term's (documents ascending, impacts)."""
    a = arrays
    size = int(a["block_post"][a["run_block"][a["term_runs"][term + 1]]] - a["block_post"][a["run_block"][
        a["term_runs"][term]]])
    docs = np.empty(size, dtype=np.int64)
    impacts = np.empty(size, dtype=np.int64)
    _decode_term(term, table(a), docs, impacts)
    order = np.argsort(docs, kind="stable")
    return docs[order], impacts[order]


# ---- search -------------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _slice_bound(acc, k):
    """The least of the maxima of k equal slices of ``acc`` (k <= len(acc)), at least 1: k documents
    reach it, so it bounds the k-th largest value from below."""
    size = len(acc) // k
    bound = np.int64(1) << 62
    for c in range(k):
        top = np.int64(0)
        for x in range(c * size, (c + 1) * size):
            if acc[x] > top:
                top = acc[x]
        if top < bound:
            bound = top
    return max(bound, np.int64(1))


@numba.njit(cache=True, nogil=True)
def _kth(acc, k, work):
    """The k-th largest value of ``acc`` (0 where fewer than k are positive), in two passes: the least
    of the maxima of k slices bounds it from below (k documents reach it), and only the values
    reaching that bound are partitioned."""
    n = len(acc)
    if k > n:
        return np.int64(0)
    bound = _slice_bound(acc, k)
    m = 0
    for x in range(n):
        if acc[x] >= bound:
            work[m] = acc[x]
            m += 1
    if m < k:
        return np.int64(0)
    part = np.partition(work[:m], m - k)
    return np.int64(part[m - k])


@numba.njit(cache=True, nogil=True, inline="always")
def order_key(score, rank):
    """One int64 that sorts by score descending, then by rank (the ids' order) ascending."""
    return -np.int64(score) * (np.int64(1) << 32) + np.int64(rank)


@numba.njit(cache=True, nogil=True, inline="always")
def _run_end(r, term_runs_end, q_weight, run_max):
    """The bound of the run after ``r`` of a term, or 0 past its last."""
    return q_weight * run_max[r + 1] if r + 1 < term_runs_end else 0


@numba.njit(cache=True, nogil=True, inline="always")
def _add_block(b, w, wb, tab, acc):
    """acc[doc] += w * impact + wb for every posting of block ``b``, one loop per gap width. Every index
    is unsigned: numba then skips its negative-index check, 20% of the loop (int64 and uint64 mixed
    would give floats, hence the explicit types)."""
    one = np.uint64(1)
    doc = np.uint64(tab.block_first[b])
    v = np.uint64(tab.block_post[b])
    n = np.uint64(tab.block_post[b + 1]) - v
    g = np.uint64(tab.block_gap[b]) - one  # gap i (i >= 1) of the block is at g + i
    acc[doc] += w * tab.values[v] + wb
    wd = tab.block_width[b]
    if wd == 0:
        for i in range(one, n):
            doc += np.uint64(tab.gaps8[g + i])
            acc[doc] += w * tab.values[v + i] + wb
    elif wd == 1:
        for i in range(one, n):
            doc += np.uint64(tab.gaps16[g + i])
            acc[doc] += w * tab.values[v + i] + wb
    else:
        for i in range(one, n):
            doc += np.uint64(tab.gaps32[g + i])
            acc[doc] += w * tab.values[v + i] + wb


@numba.njit(cache=True, nogil=True, inline="always")
def _add_upto(end, u_block, u_end, u_weight, u_wb, tab, acc):
    """Add every block starting below document ``end`` of each run u (from its next block u_block[u]
    to u_end[u], weight u_weight[u], base term u_wb[u]); u_block moves past them."""
    for u in range(len(u_block)):
        b = u_block[u]
        b_end = u_end[u]
        w = u_weight[u]
        wb = u_wb[u]
        while b < b_end and tab.block_first[b] < end:
            _add_block(b, w, wb, tab,
                       acc)
            b += 1
        u_block[u] = b


@numba.njit(cache=True, nogil=True)
def _exhaustive(q_terms, q_weights, k, tab, id_rank, acc, chunk):
    """Every posting of every query term scored, one slice of ``chunk`` documents at a time (the
    accumulator's slice stays in cache while every run adds its blocks starting in it), each slice
    collected as soon as it is complete: its documents reaching the running k-th best kept, its
    accumulator zeroed. Returns (rows, scores) of the top k by score, then ``id_rank``."""
    n_docs = len(acc)
    n_units = 0
    for i in range(len(q_terms)):
        n_units += tab.term_runs[q_terms[i] + 1] - tab.term_runs[q_terms[i]]
    u_block = np.empty(n_units, dtype=np.int64)  # each run's next block
    u_end = np.empty(n_units, dtype=np.int64)
    u_weight = np.empty(n_units, dtype=np.int64)
    u_wb = np.empty(n_units, dtype=np.int64)
    u = 0
    for i in range(len(q_terms)):
        t = q_terms[i]
        for r in range(tab.term_runs[t], tab.term_runs[t + 1]):
            u_block[u] = tab.run_block[r]
            u_end[u] = tab.run_block[r + 1]
            u_weight[u] = q_weights[i]
            u_wb[u] = q_weights[i] * tab.run_base[r]
            u += 1
    # candidates: documents reaching theta (the k-th best score of those kept so far, at least 1)
    cap = max(4 * k, 4096)
    cand = np.empty(cap + chunk, dtype=np.int64)
    score = np.empty(cap + chunk, dtype=np.int64)
    key = np.empty(cap + chunk, dtype=np.int64)  # score descending, then id_rank: the final order
    m = 0
    theta = np.int64(1)
    for start in range(0, n_docs, chunk):
        end = min(start + chunk, n_docs)
        _add_upto(end, u_block, u_end, u_weight, u_wb, tab, acc)
        # every posting of documents start..end-1 is in: a block holding one starts at or before it
        for x in range(start, end):
            v = acc[x]
            if v >= theta:
                cand[m] = x
                score[m] = v
                m += 1
            acc[x] = 0
        if m > cap:
            # keep exactly the k best by (score, id_rank), ties included in the order: then at most
            # k + chunk candidates are held whatever the ties (the buffers' size)
            for c in range(m):
                key[c] = order_key(score[c], id_rank[cand[c]])
            kth_key = np.partition(key[:m], k - 1)[k - 1]
            kept = 0
            theta = np.int64(1) << 62
            for c in range(m):
                if key[c] <= kth_key:
                    cand[kept] = cand[c]
                    score[kept] = score[c]
                    theta = min(theta, score[c])
                    kept += 1
            m = kept
    for c in range(m):
        key[c] = order_key(score[c], id_rank[cand[c]])
    top = np.argsort(key[:m])[:k]
    return cand[:m][top], score[:m][top]


@numba.njit(cache=True, nogil=True)
def _search(q_terms, q_weights, k, prune, tab, id_rank, acc, work, stats, chunk, check_every):
    n_docs = len(acc)
    # units: every run of every query term, by score bound descending (a term's runs come in order)
    n_units = 0
    for i in range(len(q_terms)):
        n_units += tab.term_runs[q_terms[i] + 1] - tab.term_runs[q_terms[i]]
    u_query = np.empty(n_units, dtype=np.int64)
    u_run = np.empty(n_units, dtype=np.int64)
    u_bound = np.empty(n_units, dtype=np.int64)
    u_size = np.empty(n_units, dtype=np.int64)
    rest = np.zeros(len(q_terms), dtype=np.int64)  # bound of each query term's runs not read yet
    first = np.zeros(len(q_terms), dtype=np.int64)  # bound of each term's first run
    u = 0
    left = 0  # postings in the units not read yet
    for i in range(len(q_terms)):
        t = q_terms[i]
        for r in range(tab.term_runs[t], tab.term_runs[t + 1]):
            u_query[u] = i
            u_run[u] = r
            u_bound[u] = q_weights[i] * tab.run_max[r]
            u_size[u] = tab.block_post[tab.run_block[r + 1]] - tab.block_post[tab.run_block[r]]
            left += u_size[u]
            u += 1
        first[i] = q_weights[i] * tab.run_max[tab.term_runs[t]]
        rest[i] = first[i]
    order = np.argsort(-u_bound)
    remaining = rest.sum()
    seen_first = 0  # the sum of the first bounds of the terms read from: no partial score exceeds it
    since_check = check_every  # the first check as soon as it can stop, the next ones spaced
    theta = np.int64(0)
    stop = n_units
    read = 0
    n_cand = 0
    j = 0
    while j < n_units:
        # a check reads the accumulator three times: spaced by the postings read so far (the reading
        # doubles from one to the next), at most CHECK_EVERY x the accumulator's size apart
        if prune and remaining < seen_first and since_check >= min(check_every, read - since_check):
            since_check = 0
            theta = _kth(acc, k, work)
            if theta > remaining:
                # stop reading whole runs once completing the candidates by lookups costs less
                n_cand = 0
                for x in range(n_docs):
                    if acc[x] + remaining >= theta:
                        n_cand += 1
                if n_cand * (n_units - j) * PROBE_COST < left:
                    stop = j
                    break
        # the units up to the next check, read together a slice of documents at a time (in cache)
        e = j
        while True:
            u = order[e]
            i = u_query[u]
            r = u_run[u]
            if rest[i] == first[i]:
                seen_first += first[i]
            since_check += u_size[u]
            read += u_size[u]
            left -= u_size[u]
            new_rest = _run_end(r, tab.term_runs[q_terms[i] + 1], q_weights[i], tab.run_max)
            remaining -= rest[i] - new_rest
            rest[i] = new_rest
            e += 1
            if e == n_units or (prune and remaining < seen_first
                                and since_check >= min(check_every, read - since_check)):
                break
        s_block = np.empty(e - j, dtype=np.int64)
        s_end = np.empty(e - j, dtype=np.int64)
        s_weight = np.empty(e - j, dtype=np.int64)
        s_wb = np.empty(e - j, dtype=np.int64)
        for x in range(j, e):
            r = u_run[order[x]]
            s_block[x - j] = tab.run_block[r]
            s_end[x - j] = tab.run_block[r + 1]
            s_weight[x - j] = q_weights[u_query[order[x]]]
            s_wb[x - j] = s_weight[x - j] * tab.run_base[r]
        for start in range(0, n_docs, chunk):
            _add_upto(start + chunk, s_block, s_end, s_weight, s_wb, tab, acc)
        j = e

    probes = 0
    if stop < n_units:
        # the candidates: every document that could still reach theta (a document not seen scores at
        # most `remaining` < theta), completed by lookups in the runs left: one forward pass over each
        # run's blocks, the candidates in document order
        cand = np.empty(n_cand, dtype=np.int64)
        n_cand = 0
        for x in range(n_docs):
            if acc[x] + remaining >= theta:
                cand[n_cand] = x
                n_cand += 1
        for j in range(stop, n_units):
            u = order[j]
            i = u_query[u]
            r = u_run[u]
            w = q_weights[i]
            base = tab.run_base[r]
            b = tab.run_block[r]
            b_end = tab.run_block[r + 1]
            b_cur = -1
            doc = np.int64(-1)
            at = np.int64(0)
            p = np.int64(0)
            for c in range(n_cand):
                d = cand[c]
                while b + 1 < b_end and tab.block_first[b + 1] <= d:
                    b += 1
                if tab.block_first[b] > d:
                    continue
                if b_cur != b:
                    b_cur = b
                    doc = np.int64(tab.block_first[b])
                    at = tab.block_gap[b]
                    p = tab.block_post[b]
                    probes += 1
                p_end = tab.block_post[b + 1]
                wd = tab.block_width[b]
                while doc < d and p + 1 < p_end:
                    doc += _gap(wd, at, tab)
                    at += 1
                    p += 1
                if doc == d:
                    acc[d] += w * (tab.values[p] + base)
            new_rest = _run_end(r, tab.term_runs[q_terms[i] + 1], w, tab.run_max)
            remaining -= rest[i] - new_rest
            rest[i] = new_rest
            # drop the candidates that can no longer reach the k-th best (partial scores of real
            # documents: the k-th best of them bounds the final k-th score from below)
            if n_cand > k:
                for x in range(n_cand):
                    work[x] = acc[cand[x]]
                part = np.partition(work[:n_cand], n_cand - k)
                theta = max(theta, np.int64(part[n_cand - k]))
            kept = 0
            for x in range(n_cand):
                if acc[cand[x]] + remaining >= theta:
                    cand[kept] = cand[x]
                    kept += 1
            n_cand = kept
        kth = np.int64(0)
        if n_cand > k:
            for x in range(n_cand):
                work[x] = acc[cand[x]]
            kth = np.int64(np.partition(work[:n_cand], n_cand - k)[n_cand - k])
        m = 0
        for x in range(n_cand):
            if acc[cand[x]] >= max(kth, 1):
                cand[m] = cand[x]
                m += 1
    else:
        # every run read: the documents reaching the least of the maxima of k slices (k documents
        # reach it, so every one of the top k does), in two passes over the accumulator
        bound = _slice_bound(acc, k) if k < n_docs else np.int64(1)
        m = 0
        for x in range(n_docs):
            if acc[x] >= bound:
                work[m] = x
                m += 1
        cand = work[:m].astype(np.int64)
        if m > k:
            values_ = np.empty(m, dtype=np.int64)
            for x in range(m):
                values_[x] = acc[cand[x]]
            kth = np.partition(values_, m - k)[m - k]
            cand = cand[values_ >= kth]
            m = len(cand)

    # the top k of them by score, then rank
    key = np.empty(m, dtype=np.int64)
    scores = np.empty(m, dtype=np.int64)
    for x in range(m):
        scores[x] = acc[cand[x]]
        key[x] = order_key(scores[x], id_rank[cand[x]])
    top = np.argsort(key)[:k]
    rows = cand[:m][top]
    scores = scores[top]
    acc[:] = 0
    stats[0] = read
    stats[1] = probes
    stats[2] = stop
    stats[3] = n_units
    return rows, scores


def _exhaustive_stats(a: dict[str, np.ndarray], q_terms: np.ndarray, stats: np.ndarray) -> None:
    """The exhaustive kernel's statistics: every posting and every run of the query's terms read."""
    runs = [(int(a["term_runs"][t]), int(a["term_runs"][t + 1])) for t in q_terms.tolist()]
    post = a["block_post"]
    stats[0] = sum(int(post[a["run_block"][hi]] - post[a["run_block"][lo]]) for lo, hi in runs)
    stats[1], stats[2] = 0, sum(hi - lo for lo, hi in runs)
    stats[3] = stats[2]


def search(arrays: dict[str, np.ndarray], id_rank: np.ndarray, q_terms: np.ndarray, q_weights: np.ndarray,
           k: int, prune: bool, acc: np.ndarray, work: np.ndarray, stats: np.ndarray | None = None):
    """The top ``k`` (rows, integer scores) of a query (term numbers and integer weights >= 1), by score
    descending then ``id_rank``. ``acc`` (int32, zeros) and ``work`` (int32) are scratch space of one
    entry per document, ``acc`` left as found; one pair per thread."""
    a = arrays
    if not prune:
        if stats is not None:  # counted only when asked for (a Python loop over the query's terms)
            _exhaustive_stats(a, q_terms, stats)
        return _exhaustive(q_terms, q_weights, k, table(a), id_rank, acc, CHUNK)
    if stats is None:
        stats = np.zeros(4, dtype=np.int64)
    return _search(q_terms, q_weights, k, prune, table(a), id_rank, acc, work, stats, CHUNK,
                   max(1, int(CHECK_EVERY * len(acc))))


@numba.njit(cache=True, nogil=True)
def _document(row, tab):
    found_terms = []
    found_impacts = []
    for t in range(len(tab.term_runs) - 1):
        for r in range(tab.term_runs[t], tab.term_runs[t + 1]):
            lo, hi = tab.run_block[r], tab.run_block[r + 1]
            b = lo + np.searchsorted(tab.block_first[lo:hi], row, side="right") - 1
            if b < lo:
                continue
            doc = np.int64(tab.block_first[b])
            at = tab.block_gap[b]
            p0 = tab.block_post[b]
            for p in range(p0, tab.block_post[b + 1]):
                if p > p0:
                    doc += _gap(tab.block_width[b], at, tab)
                    at += 1
                if doc >= row:
                    if doc == row:
                        found_terms.append(t)
                        found_impacts.append(np.int64(tab.values[p]) + tab.run_base[r])
                    break
    out_t = np.empty(len(found_terms), dtype=np.int64)
    out_v = np.empty(len(found_terms), dtype=np.int64)
    for i in range(len(found_terms)):
        out_t[i] = found_terms[i]
        out_v[i] = found_impacts[i]
    return out_t, out_v


def document(arrays: dict[str, np.ndarray], row: int) -> tuple[np.ndarray, np.ndarray]:
    """The (term numbers, impacts) of one document."""
    a = arrays
    return _document(row, table(a))
