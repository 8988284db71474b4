"""Block-max exact search over reordered documents: search that grows slower than the collection.

The documents of an index are placed in an order where similar documents sit together (recursive
graph bisection, :mod:`splade_lucene.indexing.reorder`) and cut, in that order, into **blocks** of
:data:`BLOCK` documents (BMP's design, Mallia et al., SIGIR 2024). The engine keeps:

- per term, its highest impact in every block: one byte (two where impacts pass 255) per block for
  the terms found in at least one block in :data:`DENSE_SHARE` (a dense row, added to the bounds
  with vector instructions), the (block, maximum) pairs of the blocks it occurs in for the others;
- a **forward index** in the new order: each document's (term, impact) pairs;
- the new order itself (``perm``: the Lucene docid placed at each position), and per term its 10th,
  100th and 1000th largest impacts.

A block's bound is the sum, over the query's terms, of the query weight times the term's block
maximum: an upper bound of every score in the block. Summing it for every block costs a pass over
every dense row, which grows with the collection; so the blocks are taken in **groups** of
:data:`GROUP` (superblocks, as SP does, arXiv 2504.17045, but only for the dense rows): the dense
terms add their maxima over each group (derived when the files are opened), the sparse terms add
into their blocks as before, and a group's bound is its dense sum plus the highest sparse sum among
its blocks, at least the bound of each of them. The top-k threshold ``theta`` starts at what the
query is sure to reach (the largest query weight times that term's k-th largest impact, for k up to
10, 100 or 1000); the groups whose bound reaches it are taken in decreasing bound, and a group is
opened (its blocks' bounds completed from the dense rows, one byte a block) only once its bound passes
the highest bound of the blocks already waiting; the waiting blocks are scored in decreasing bound,
each document scored from the forward index against the query's weights, every document reaching
theta entering the top k, which raises theta. The search stops when no waiting block and no group
left reaches theta. A document left unscored lies in a block whose bound, or whose group's, is below
theta, which is at most the final k-th score: it can neither be among the top k nor tie with the
k-th. So the result is exact: the same documents, integer scores and order (score, then doc id) as
exhaustive scoring and Lucene.

``alpha`` below 1 (approximate, opt-in) skips the blocks and groups whose bound times alpha is below
theta: faster, and documents of the exact top k may be missed. ``query_terms`` bounds the blocks
with a query's N strongest terms only (also approximate: the bounds pass is shorter, and a block
whose weaker terms would have lifted it is skipped). Either way every score returned is exact.

Groups over every term (SP's superblocks) were measured too: with SciFact's long queries (47 terms
at the median) a quarter of the groups of 64 documents reach the final 10th score at 1,000,000
wiki passages, against 3% with the sparse terms kept per block (docs/performance.md).
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..core.atomic import folder_in_place, naming_a_full_disk, output_lock, save_array
from ..core.errors import SettingError, SpladeLuceneError
from ..indexing import BLOCKMAX_BLOCK, BLOCKMAX_ORDERS  # the package's names, which the CLI reads too
from . import compressed
from .impacts import TABLE_DIR, ImpactTable, ImpactTableError
from .reorder import ITERATIONS, bisection_order

BLOCK_DIR = "blockmax"
VERSION = 1
BLOCK = BLOCKMAX_BLOCK
# a term whose postings fall in at least this share of the blocks keeps a dense row of block maxima
DENSE_SHARE = 1 / 8
# the ranks of the impacts kept per term to seed the top-k threshold
SEED_RANKS = (10, 100, 1000)
_SEED_RANKS = np.asarray(SEED_RANKS, dtype=np.int64)
# the candidate blocks are bucketed by bound into this many buckets
N_BUCKETS = 4096
# blocks per group: the dense terms bound a group by their maxima over its blocks (docs/performance.md)
GROUP = 16
# the integers a search's ``stats`` gets
STATS = 5
# the groups ahead of the one visited whose block maxima are asked for (prefetched) while it is scored
AHEAD = 4
_META = "blockmax.json"
# write_blockmax's orders: bisection, Lucene's, or the one already written
ORDERS = BLOCKMAX_ORDERS
ARRAYS = ("term_shift", "dense_row", "dense_max", "sparse_off", "sparse_block", "sparse_max", "doc_off", "fwd_term",
          "fwd_imp", "perm", "seed")


class Files(NamedTuple):
    """The block-max arrays (:data:`ARRAYS`) as the kernel takes them: one record."""

    term_shift: np.ndarray
    dense_row: np.ndarray
    dense_max: np.ndarray
    sparse_off: np.ndarray
    sparse_block: np.ndarray
    sparse_max: np.ndarray
    doc_off: np.ndarray
    fwd_term: np.ndarray
    fwd_imp: np.ndarray
    perm: np.ndarray
    seed: np.ndarray


def as_files(arrays: dict[str, np.ndarray]) -> Files:
    return Files(*(arrays[name] for name in ARRAYS))


class BlockMaxError(SpladeLuceneError, RuntimeError):
    """A block-max index that cannot be written, or does not match its index's postings."""


# ---- building -------------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _block_maxima(offsets, rows, impacts, position, block, n_blocks, dense_share):
    """Each term's number of blocks, and which terms get a dense row (-1: sparse)."""
    n_terms = len(offsets) - 1
    counts = np.zeros(n_terms, dtype=np.int64)
    mark = np.full(n_blocks, -1, dtype=np.int64)
    for t in range(n_terms):
        for p in range(offsets[t], offsets[t + 1]):
            b = position[rows[p]] // block
            if mark[b] != t:
                mark[b] = t
                counts[t] += 1
    dense_row = np.full(n_terms, -1, dtype=np.int32)
    n_dense = 0
    for t in range(n_terms):
        if counts[t] >= dense_share * n_blocks:
            dense_row[t] = n_dense
            n_dense += 1
    return counts, dense_row, n_dense


@numba.njit(cache=True, nogil=True)
def _fill_maxima(offsets, rows, impacts, position, block, dense_row, dense_max, sparse_off, sparse_block,
                 sparse_max, term_shift):
    """Each term's block maxima, one byte each: ceil(maximum / 2**shift), the term's shift the least
    that brings its highest impact under 256 (0 for most terms: the maxima themselves)."""
    n_blocks = dense_max.shape[1]
    scratch = np.zeros(n_blocks, dtype=np.int64)
    for t in range(len(offsets) - 1):
        lo, hi = offsets[t], offsets[t + 1]
        shift = term_shift[t]
        blocks = np.empty(hi - lo, dtype=np.int64)
        n = 0
        for p in range(lo, hi):
            b = position[rows[p]] // block
            if scratch[b] == 0:
                blocks[n] = b
                n += 1
            scratch[b] = max(scratch[b], np.int64(impacts[p]))
        blocks = np.sort(blocks[:n])
        at = sparse_off[t]
        for i in range(n):
            b = blocks[i]
            q = (scratch[b] + (1 << shift) - 1) >> shift
            if dense_row[t] >= 0:
                dense_max[dense_row[t], b] = q
            else:
                sparse_block[at + i] = b
                sparse_max[at + i] = q
            scratch[b] = 0


@numba.njit(cache=True, nogil=True)
def _fill_terms(offsets, impacts, term_shift, seed, seed_ranks):
    """Per term: the shift that brings its highest impact under 256, its impacts at the seed ranks."""
    for t in range(len(offsets) - 1):
        lo, hi = offsets[t], offsets[t + 1]
        ranked = np.sort(impacts[lo:hi])[::-1]
        for r in range(len(seed_ranks)):
            seed[t, r] = ranked[seed_ranks[r] - 1] if len(ranked) >= seed_ranks[r] else 0
        shift = 0
        if hi > lo:
            while (np.int64(ranked[0]) + (1 << shift) - 1) >> shift > 255:
                shift += 1
        term_shift[t] = shift


@numba.njit(cache=True, nogil=True)
def _fill_forward(offsets, rows, impacts, position, doc_off, fwd_term, fwd_imp):
    cursor = doc_off[:-1].copy()
    for t in range(len(offsets) - 1):
        for p in range(offsets[t], offsets[t + 1]):
            x = position[rows[p]]
            fwd_term[cursor[x]] = t
            fwd_imp[cursor[x]] = impacts[p]
            cursor[x] += 1


def build_arrays(offsets: np.ndarray, rows: np.ndarray, impacts: np.ndarray, order: np.ndarray, *,
                 block: int = BLOCK, dense_share: float = DENSE_SHARE) -> dict[str, np.ndarray]:
    """The block-max arrays of term-major postings (``offsets`` per term into ``rows``, each row's
    ``impacts`` at least 1) with the documents placed in ``order`` (``order[i]``: the row placed i-th)."""
    check_block(block)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    rows = np.ascontiguousarray(rows)
    impacts = np.ascontiguousarray(impacts)
    order = np.ascontiguousarray(order, dtype=np.int32)
    n_docs, n_terms = len(order), len(offsets) - 1
    if len(impacts) and int(impacts.min()) < 1:
        raise ValueError("impacts must be at least 1")
    if not np.array_equal(np.sort(order), np.arange(n_docs, dtype=np.int32)):
        raise ValueError("order must hold every document once")
    max_impact = int(impacts.max()) if len(impacts) else 0
    if max_impact >= 2 ** 16:
        raise ValueError(f"impacts up to {max_impact} do not fit in 16 bits")
    if n_terms >= 2 ** 31:
        raise ValueError(f"{n_terms} terms do not fit in 32 bits")
    imp_type = np.uint8 if max_impact < 256 else np.uint16  # the forward index's exact impacts
    term_type = np.uint16 if n_terms <= 2 ** 16 else np.uint32
    position = np.empty(n_docs, dtype=np.int64)
    position[order] = np.arange(n_docs)
    lengths = np.bincount(rows, minlength=n_docs)[order]
    doc_off = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=doc_off[1:])
    out = {
        "term_shift": np.zeros(n_terms, dtype=np.uint8),
        "seed": np.zeros((n_terms, len(SEED_RANKS)), dtype=np.int32),
        "doc_off": doc_off,
        "fwd_term": np.zeros(len(rows), dtype=term_type),
        "fwd_imp": np.zeros(len(rows), dtype=imp_type),
        "perm": order,
    }
    _fill_terms(offsets, impacts, out["term_shift"], out["seed"], _SEED_RANKS)
    n_blocks = -(-n_docs // block)
    counts, dense_row, n_dense = _block_maxima(offsets, rows, impacts, position, block, n_blocks, float(dense_share))
    sparse_off = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(np.where(dense_row < 0, counts, 0), out=sparse_off[1:])
    out.update({"dense_row": dense_row, "dense_max": np.zeros((n_dense, n_blocks), dtype=np.uint8),
                "sparse_off": sparse_off, "sparse_block": np.zeros(int(sparse_off[-1]), dtype=np.int32),
                "sparse_max": np.zeros(int(sparse_off[-1]), dtype=np.uint8)})
    _fill_maxima(offsets, rows, impacts, position, block, out["dense_row"], out["dense_max"], out["sparse_off"],
                 out["sparse_block"], out["sparse_max"], out["term_shift"])
    _fill_forward(offsets, rows, impacts, position, doc_off, out["fwd_term"], out["fwd_imp"])
    return {name: out[name] for name in ARRAYS}


def check_block(block: int) -> int:
    if isinstance(block, bool) or not 1 <= int(block) <= 4096:
        raise SettingError(f"block must be 1 to 4,096 documents, not {block}")
    return int(block)


def check_group(group: int) -> int:
    if isinstance(group, bool) or not 1 <= int(group) <= 4096:
        raise SettingError(f"group must be 1 to 4,096 blocks, not {group}")
    return int(group)


def check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha <= 1.0:
        raise SettingError(f"alpha must be in (0, 1] (1: exact), not {alpha}")
    return alpha


def check_query_terms(query_terms: int | None) -> int | None:
    if query_terms is not None and (isinstance(query_terms, bool) or int(query_terms) < 1):
        raise SettingError(f"query_terms must be at least 1 (or None: every term), not {query_terms}")
    return None if query_terms is None else int(query_terms)


# ---- search ---------------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True, inline="always")
def _score_of(key):
    return -((key - (key & 0xFFFFFFFF)) >> 32)


@numba.njit(cache=True, nogil=True)
def _add_dense(ub, row, w):
    for b in range(len(ub)):
        ub[b] += w * np.int32(row[b])


def _item_pointer(context, builder, array_type, array, index):
    """In an intrinsic's code: a pointer to ``array[index]`` (a one-dimensional array)."""
    return cgutils.get_item_pointer(context, builder, array_type,
                                    context.make_array(array_type)(context, builder, array), [index])


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to bring ``array[index]`` towards its caches, without waiting for it (LLVM's
    prefetch: no fault, no result)."""
    def codegen(context, builder, signature, args):
        pointer = _item_pointer(context, builder, signature.args[0], args[0], args[1])
        bytes_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        signature_ir = ir.FunctionType(ir.VoidType(), [bytes_pointer, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, signature_ir, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(pointer, bytes_pointer), i32(0), i32(3), i32(1)])  # read, keep, data
        return context.get_dummy_value()

    return types.void(array, index), codegen


@intrinsic
def _add16(typingctx, sums, row, start, weight):
    """``sums[0:16] += weight * row[start:start + 16]`` (int32 sums, uint8 row) as one vector operation:
    written out, the loop is not vectorised and takes five times as long."""
    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        i32x16 = ir.VectorType(i32, 16)
        i8x16 = ir.VectorType(ir.IntType(8), 16)
        sums_pointer = _vector16(context, builder, signature.args[0], args[0], context.get_constant(types.intp, 0))
        row_pointer = _item_pointer(context, builder, signature.args[1], args[1], args[2])
        maxima = builder.zext(builder.load(builder.bitcast(row_pointer, i8x16.as_pointer()), align=1), i32x16)
        weight32 = context.cast(builder, args[3], signature.args[3], types.int32)
        undefined = ir.Constant(i32x16, ir.Undefined)
        weights = builder.shuffle_vector(builder.insert_element(undefined, weight32, i32(0)), undefined,
                                         ir.Constant(i32x16, [0] * 16))
        builder.store(builder.add(builder.load(sums_pointer, align=4), builder.mul(maxima, weights)), sums_pointer,
                      align=4)
        return context.get_dummy_value()

    return types.void(sums, row, start, weight), codegen


def _vector16(context, builder, array_type, array, start):
    """A pointer to ``array[start:start + 16]`` (int32) as one vector of 16."""
    pointer = _item_pointer(context, builder, array_type, array, start)
    return builder.bitcast(pointer, ir.VectorType(ir.IntType(32), 16).as_pointer())


@intrinsic
def _max16(typingctx, sums, start):
    """The highest of ``sums[start:start + 16]`` (int32): one vector load and one reduction."""
    def codegen(context, builder, signature, args):
        vector = builder.load(_vector16(context, builder, signature.args[0], args[0], args[1]), align=4)
        reduce = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), [vector.type]),
                                                "llvm.vector.reduce.smax.v16i32")
        return builder.call(reduce, [vector])

    return types.int32(sums, start), codegen


@intrinsic
def _zero16(typingctx, sums, start):
    """``sums[start:start + 16] = 0`` (int32): one vector store."""
    def codegen(context, builder, signature, args):
        pointer = _vector16(context, builder, signature.args[0], args[0], args[1])
        builder.store(ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16), pointer, align=4)
        return context.get_dummy_value()

    return types.void(sums, start), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _highest(sums, first, group):
    """The highest of ``sums[first:first + group]`` (a vector reduction for groups of 16)."""
    if group == 16:
        return _max16(sums, first)
    m = np.int32(0)
    for b in range(first, first + group):
        m = max(m, sums[b])
    return m


@numba.njit(cache=True, nogil=True, inline="always")
def _clear(sums, first, group):
    """``sums[first:first + group] = 0`` (a vector store for groups of 16)."""
    if group == 16:
        _zero16(sums, first)
    else:
        for b in range(first, first + group):
            sums[b] = 0


@numba.njit(cache=True, nogil=True, inline="always")
def _add_row(sums, row, first, n, weight):
    """``sums[:n] += weight * row[first:first + n]`` (a vector multiply-add where n is 16)."""
    if n == 16:
        _add16(sums, row, first, weight)
    else:
        for j in range(n):
            sums[j] += weight * np.int32(row[first + j])


@numba.njit(cache=True, nogil=True)
def _group_maxima(dense_max, group):
    """Each dense row's maximum over every ``group`` consecutive blocks."""
    n_dense, n_blocks = dense_max.shape
    n_groups = -(-n_blocks // group)
    out = np.zeros((n_dense, n_groups), dtype=np.uint8)
    for r in range(n_dense):
        row = dense_max[r]
        for g in range(n_groups):
            m = np.uint8(0)
            for b in range(g * group, min(g * group + group, n_blocks)):
                m = max(m, row[b])
            out[r, g] = m
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _sift_up(heap, pos, i):
    """The max-heap ``heap`` (with ``pos`` alongside, or None) restored after ``heap[i]`` grew."""
    while i > 0:
        parent = (i - 1) // 2
        if heap[parent] >= heap[i]:
            break
        heap[i], heap[parent] = heap[parent], heap[i]
        if pos is not None:
            pos[i], pos[parent] = pos[parent], pos[i]
        i = parent


@numba.njit(cache=True, nogil=True, inline="always")
def _sift_down(heap, pos, n):
    """The max-heap ``heap[:n]`` (with ``pos`` alongside, or None) restored after its top shrank."""
    i = 0
    while True:
        left = 2 * i + 1
        if left >= n:
            break
        big = left
        if left + 1 < n and heap[left + 1] > heap[left]:
            big = left + 1
        if heap[big] <= heap[i]:
            break
        heap[i], heap[big] = heap[big], heap[i]
        if pos is not None:
            pos[i], pos[big] = pos[big], pos[i]
        i = big


@numba.njit(cache=True, nogil=True, inline="always")
def _push(heap, heap_pos, n_heap, k, key, pos):
    """``key`` (at ``pos``) into the top-k max-heap of order keys; the heap's new size, or -1 where the
    key was not kept (the heap full and the key after its last)."""
    if n_heap < k:
        heap[n_heap] = key
        heap_pos[n_heap] = pos
        _sift_up(heap, heap_pos, n_heap)
        return n_heap + 1
    if key >= heap[0]:
        return -1
    heap[0] = key
    heap_pos[0] = pos
    _sift_down(heap, heap_pos, n_heap)
    return n_heap


@numba.njit(cache=True, nogil=True, inline="always")
def _heap_add(heap, n, key):
    """``key`` into the max-heap ``heap[:n]``; its new size."""
    heap[n] = key
    _sift_up(heap, None, n)
    return n + 1


@numba.njit(cache=True, nogil=True, inline="always")
def _heap_pop(heap, n):
    """The max-heap ``heap[:n]`` without its top; its new size."""
    n -= 1
    heap[0] = heap[n]
    _sift_down(heap, None, n)
    return n


@numba.njit(cache=True, nogil=True)
def _search(q_terms, q_weights, k, alpha, block, group, files, group_max, seed_ranks, id_rank, scratch, stats,
            n_bound):
    term_shift, dense_row, dense_max, sparse_off, sparse_block, sparse_max = files[:6]
    doc_off, fwd_term, fwd_imp, perm, seed = files[6:]
    ub, gb, qw, found, bounds, waiting = scratch
    n_docs = len(perm)
    n_blocks = dense_max.shape[1]
    n_groups = len(gb)
    nq = len(q_terms)
    theta = np.int64(1)
    # the query's dense terms (their rows and weights), which bound the groups and complete the bounds
    # of the blocks of the groups visited; the sparse terms add into the blocks' bounds
    d_rows = np.empty(nq, dtype=np.int64)
    d_weights = np.empty(nq, dtype=np.int32)
    n_dense = 0
    n_sparse = 0
    for i in range(nq):
        t = q_terms[i]
        w = q_weights[i]
        qw[t] = w
        if i >= n_bound:
            continue
        wb = np.int32(w << term_shift[t])  # the maxima are ceil(max / 2**shift): an upper bound still
        if dense_row[t] >= 0:
            _add_dense(gb, group_max[dense_row[t]], wb)
            d_rows[n_dense] = dense_row[t]
            d_weights[n_dense] = wb
            n_dense += 1
        else:
            for e in range(sparse_off[t], sparse_off[t + 1]):
                ub[np.uint32(sparse_block[e])] += wb * np.int32(sparse_max[e])  # unsigned: no wraparound test
            n_sparse += 1
        for r in range(len(seed_ranks)):
            if k <= seed_ranks[r]:
                theta = max(theta, w * np.int64(seed[t, r]))
                break
    # one pass over the groups: a group's bound is its dense terms' group maxima plus the highest of
    # its blocks' sparse sums; the groups reaching theta kept (with the highest bound), the others'
    # sums zeroed behind (the kept groups' after the visit)
    n_found = 0
    top_ub = np.int64(0)
    for g in range(n_groups):
        first = g * group
        m = _highest(ub, first, group) if n_sparse else np.int32(0)
        u = gb[g] + m
        gb[g] = 0
        if u >= theta:
            found[n_found] = g
            bounds[n_found] = u
            n_found += 1
            top_ub = max(top_ub, np.int64(u))
        elif m:
            _clear(ub, first, group)
    # the groups bucketed by bound (a counting sort, highest bucket first; within a bucket, group
    # order), visited until a bucket's highest possible bound is below theta
    shift = 0
    while (top_ub - theta) >> shift >= N_BUCKETS:
        shift += 1
    count = np.zeros(N_BUCKETS + 1, dtype=np.int64)
    for x in range(n_found):
        count[N_BUCKETS - ((bounds[x] - theta) >> shift)] += 1
    n_cand = 0
    for j in range(N_BUCKETS + 1):
        c = count[j]
        count[j] = n_cand
        n_cand += c
    cand = np.empty(n_cand, dtype=np.int64)
    cand_ub = np.empty(n_cand, dtype=np.int64)
    theta0 = theta
    for x in range(n_found):
        j = N_BUCKETS - ((bounds[x] - theta0) >> shift)
        cand[count[j]] = found[x]
        cand_ub[count[j]] = bounds[x]
        count[j] += 1
    heap = np.empty(k, dtype=np.int64)
    heap_pos = np.empty(k, dtype=np.int64)
    n_heap = 0
    visited = 0
    scored = 0
    postings = 0
    # the blocks of the groups visited, by bound (a max-heap of bound << 32 | block): the blocks are
    # scored in decreasing bound, as without groups, and a group is visited (its blocks' bounds
    # completed) only once its bound passes the highest bound of the blocks waiting
    n_waiting = 0
    block_ub = np.empty(max(group, 16), dtype=np.int32)
    c = 0
    while True:
        top_block = waiting[0] >> 32 if n_waiting else np.int64(-1)
        if c < n_cand and (cand_ub[c] > top_block or top_block * alpha < theta):
            g = cand[c]
            bound = cand_ub[c]
            # the highest bound left among the groups, this group's bucket's top, cannot reach theta:
            # no group left can
            if (theta0 + (((bound - theta0) >> shift) + 1 << shift) - 1) * alpha < theta:
                c = n_cand
                continue
            c += 1
            if bound * alpha < theta:
                continue
            visited += 1
            if c - 1 + AHEAD < n_cand:
                # the sums and maxima of a group visited soon, asked for now: the dense rows are read
                # at scattered places, each a wait on memory otherwise
                ahead = cand[c - 1 + AHEAD] * group
                _prefetch(ub, ahead)
                for d in range(n_dense):
                    _prefetch(dense_max[d_rows[d]], min(ahead, n_blocks - 1))
            # the bounds of the group's blocks: their sparse sums plus each dense term's block maxima
            first_block = g * group
            n_here = min(group, n_blocks - first_block)
            for j in range(n_here):
                block_ub[j] = ub[first_block + j]
            for d in range(n_dense):
                _add_row(block_ub, dense_max[d_rows[d]], first_block, n_here, d_weights[d])
            for j in range(n_here):
                u = np.int64(block_ub[j])
                if u * alpha >= theta:
                    n_waiting = _heap_add(waiting, n_waiting, (u << 32) | (first_block + j))
            continue
        if top_block < 0 or top_block * alpha < theta:
            break
        b = waiting[0] & 0xFFFFFFFF
        n_waiting = _heap_pop(waiting, n_waiting)
        scored += 1
        first = b * block
        last = min(first + block, n_docs)
        postings += doc_off[last] - doc_off[first]
        for pos in range(first, last):
            v = np.int64(0)
            for p in range(np.uint64(doc_off[pos]), np.uint64(doc_off[pos + 1])):  # unsigned: no wraparound test
                v += qw[fwd_term[p]] * np.int64(fwd_imp[p])
            if v < theta:
                continue
            kept = _push(heap, heap_pos, n_heap, k, compressed.order_key(v, id_rank[perm[pos]]), pos)
            if kept >= 0:
                n_heap = kept
                if n_heap == k:
                    theta = max(theta, _score_of(heap[0]))
    for i in range(nq):
        qw[q_terms[i]] = 0
    if n_sparse:
        for x in range(n_found):
            _clear(ub, found[x] * group, group)
    top = np.argsort(heap[:n_heap])
    rows = np.empty(n_heap, dtype=np.int64)
    scores = np.empty(n_heap, dtype=np.int64)
    for x in range(n_heap):
        rows[x] = perm[heap_pos[top[x]]]
        scores[x] = _score_of(heap[top[x]])
    stats[0] = n_cand
    stats[1] = scored
    stats[2] = postings
    stats[3] = n_blocks
    stats[4] = visited
    return rows, scores


def search(arrays: dict[str, np.ndarray], block: int, group: int, group_max: np.ndarray, id_rank: np.ndarray,
           q_terms: np.ndarray, q_weights: np.ndarray, k: int, scratch: Scratch, alpha: float = 1.0,
           stats: np.ndarray | None = None, n_bound: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` (rows, integer scores) of a query (term numbers, integer weights >= 1), by score
    descending then ``id_rank``; exact where ``alpha`` is 1 and ``n_bound`` None. ``group`` blocks form a
    group, bounded by ``group_max`` (:func:`group_maxima` of the dense rows). ``n_bound``: only the first
    ``n_bound`` terms bound the blocks (approximate: a block may be skipped that holds a top document);
    every term scores. ``scratch``: :func:`scratch_space`, one per thread. ``stats`` (5 integers) gets the
    groups reaching the seeded threshold, the blocks scored, their postings, the blocks, the groups visited."""
    if stats is None:
        stats = np.zeros(STATS, dtype=np.int64)
    elif len(stats) < STATS or stats.dtype != np.int64:
        raise ValueError(f"stats must be {STATS} int64 integers (the kernel writes them all)")
    return _search(q_terms, q_weights, int(k), float(alpha), int(block), int(group), as_files(arrays), group_max,
                   _SEED_RANKS, id_rank, scratch, stats, len(q_terms) if n_bound is None else int(n_bound))


def group_maxima(dense_max: np.ndarray, group: int) -> np.ndarray:
    """The dense rows' maxima over every ``group`` consecutive blocks (the rows themselves for 1)."""
    return dense_max if group == 1 else _group_maxima(dense_max, int(group))


class Scratch(NamedTuple):
    """A search's working arrays, zeroed and left zeroed by every search: the blocks' sparse sums (a
    whole number of groups), the groups' dense sums, the query's weight per term; and room for the
    groups that reach the threshold and for the blocks waiting to be scored."""

    ub: np.ndarray
    gb: np.ndarray
    qw: np.ndarray
    found: np.ndarray
    bounds: np.ndarray
    waiting: np.ndarray


def scratch_space(n_blocks: int, group: int, n_terms: int) -> Scratch:
    """A :class:`Scratch` for ``n_blocks`` blocks in groups of ``group`` and ``n_terms`` terms (one per thread)."""
    n_groups = -(-n_blocks // group)
    return Scratch(np.zeros(n_groups * group, dtype=np.int32), np.zeros(n_groups, dtype=np.int32),
                   np.zeros(n_terms, dtype=np.int64), np.empty(n_groups, dtype=np.int32),
                   np.empty(n_groups, dtype=np.int32), np.empty(n_groups * group + 1, dtype=np.int64))


# ---- the index's files ----------------------------------------------------------------------------

def table_postings(table: ImpactTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every posting of an impact table, term-major: (offsets, rows, impacts); within a term in no
    particular order."""
    return compressed.all_postings(table.arrays)


@numba.njit(cache=True, nogil=True)
def _transpose(offsets, rows, impacts, n_docs):
    counts = np.zeros(n_docs + 1, dtype=np.int64)
    for r in rows:
        counts[r + 1] += 1
    doc_offsets = np.cumsum(counts)
    cursor = doc_offsets[:-1].copy()
    doc_terms = np.empty(len(rows), dtype=np.int32)
    doc_impacts = np.empty(len(rows), dtype=np.int32)
    for t in range(len(offsets) - 1):
        for p in range(offsets[t], offsets[t + 1]):
            r = rows[p]
            doc_terms[cursor[r]] = t
            doc_impacts[cursor[r]] = impacts[p]
            cursor[r] += 1
    return doc_offsets, doc_terms, doc_impacts


def forward_index(offsets: np.ndarray, rows: np.ndarray, impacts: np.ndarray, n_docs: int):
    """Document-major (doc_offsets, terms, impacts) of term-major postings, terms ascending."""
    return _transpose(np.ascontiguousarray(offsets, dtype=np.int64), rows, impacts, int(n_docs))


def _table_identity(index_dir: Path) -> dict:
    meta = (index_dir / TABLE_DIR / "table.json").read_bytes()
    return {"table_json_crc32": zlib.crc32(meta), **{k: v for k, v in json.loads(meta).items()
                                                      if k in ("commit", "postings", "terms", "bytes")}}


def _crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def write_blockmax(index_dir: str | Path, *, block: int = BLOCK, order: str = "bp",
                   terms_per_doc: int | None = None, iterations: int | None = None) -> Path:
    """Write ``index_dir/blockmax`` from the index's impact table: the documents reordered (``order``:
    ``bp``, recursive graph bisection, over each document's ``terms_per_doc`` strongest terms or all;
    ``index``: Lucene's order; ``keep``: the order of the block-max files already written, checked as
    :meth:`BlockMaxIndex.load` checks them, to cut other blocks without ordering again) and cut into
    blocks of ``block``. Returns the folder."""
    check_block(block)
    if order not in ORDERS:
        raise SettingError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    if terms_per_doc is not None and (isinstance(terms_per_doc, bool) or terms_per_doc < 1):
        raise SettingError(f"terms_per_doc must be at least 1 (or None: every term), not {terms_per_doc}")
    if iterations is not None and (isinstance(iterations, bool) or iterations < 1):
        raise SettingError(f"iterations must be at least 1, not {iterations}")
    index_dir = Path(index_dir)
    table = ImpactTable.load(index_dir)
    if table is None:
        raise ImpactTableError(f"{index_dir} has no impact table to build a block-max index from; write one with "
                               "`splade-lucene impacts`")
    target = index_dir / BLOCK_DIR
    with output_lock(target), naming_a_full_disk(target):
        timings = {}
        start = time.perf_counter()
        offsets, rows, impacts = table_postings(table)
        timings["decode_s"] = time.perf_counter() - start
        start = time.perf_counter()
        kept_order = None
        if order == "keep":
            written = BlockMaxIndex.load(index_dir, table)
            perm = np.array(written.arrays["perm"], dtype=np.int32)  # a copy: the folder is replaced below
            kept_order = {**written.meta["order"], "kept_from_block": written.block}
            del written
        elif order == "bp":
            doc_offsets, doc_terms, doc_impacts = forward_index(offsets, rows, impacts, table.num_docs)
            kwargs = {} if iterations is None else {"iterations": iterations}
            perm = bisection_order(doc_offsets, doc_terms, len(table.terms), doc_impacts=doc_impacts,
                                   terms_per_doc=terms_per_doc, **kwargs)
            del doc_offsets, doc_terms, doc_impacts
        else:
            perm = np.arange(table.num_docs, dtype=np.int32)
        timings["order_s"] = time.perf_counter() - start
        start = time.perf_counter()
        arrays = build_arrays(offsets, rows, impacts, perm, block=block)
        timings["build_s"] = time.perf_counter() - start
        del offsets, rows, impacts
        with folder_in_place(target, "blockmax.write") as tmp:
            files = {}
            for name, array in arrays.items():
                path = tmp / f"{name}.npy"
                save_array(path, array)
                files[path.name] = {"bytes": path.stat().st_size, "crc32": _crc(path)}
            meta = {"version": VERSION, "block": block, "docs": table.num_docs, "postings": table.postings,
                    "order": kept_order or {"method": order, "terms_per_doc": terms_per_doc,
                                            "iterations": (iterations or ITERATIONS) if order == "bp" else None},
                    "table": _table_identity(index_dir), "files": files,
                    "bytes": int(sum(a.nbytes for a in arrays.values())), "seconds": timings}
            (tmp / _META).write_text(json.dumps(meta, indent=2) + "\n")
    return target


class BlockMaxIndex:
    """An index's block-max files (:func:`write_blockmax`), memory-mapped, with exact top-k search.

    :meth:`top` takes the table's terms and integer weights and gives what
    :meth:`splade_lucene.indexing.impacts.ImpactTable.top` gives: the (Lucene docid, score) pairs of Lucene's
    hits, or ``None`` for a query the table leaves to Lucene. Any number of threads may search one
    index at once.
    """

    def __init__(self, table: ImpactTable, arrays: dict[str, np.ndarray], block: int, group: int = GROUP):
        self.table = table
        self.arrays = arrays
        self.block = block
        self.group = check_group(group)
        self.num_docs = table.num_docs
        self.num_blocks = -(-self.num_docs // block)
        self.meta: dict = {}
        self._scratch = threading.local()
        self._term_max: np.ndarray | None = None
        self._group_max: np.ndarray | None = None

    @classmethod
    def from_table(cls, table: ImpactTable, order: np.ndarray | None = None, *,
                   block: int = BLOCK, group: int = GROUP) -> "BlockMaxIndex":
        """Built in memory from a table (``order``: the rows in their new order; default BP)."""
        offsets, rows, impacts = table_postings(table)
        if order is None:
            order = bisection_order(*forward_index(offsets, rows, impacts, table.num_docs)[:2], len(table.terms))
        return cls(table, build_arrays(offsets, rows, impacts, order, block=block), block, group)

    @classmethod
    def load(cls, index_dir: str | Path, table: ImpactTable | None = None, *, verify: bool = True,
             group: int = GROUP) -> "BlockMaxIndex":
        """The index's block-max files, memory-mapped; :class:`BlockMaxError` naming the file where one
        is missing, truncated, changed (``verify``: every file's CRC-32 checked) or from another build
        of the index's postings. ``group``: blocks per group (the groups' maxima derived here)."""
        check_group(group)
        index_dir = Path(index_dir)
        folder = index_dir / BLOCK_DIR
        if not (folder / _META).is_file():
            raise BlockMaxError(f"{index_dir} has no block-max index ({folder / _META} is missing); write one "
                                "with `splade-lucene blockmax`")
        try:
            meta = json.loads((folder / _META).read_text())
        except (OSError, ValueError) as err:
            raise BlockMaxError(f"{folder / _META} is damaged ({err}); rewrite it with "
                                "`splade-lucene blockmax`") from err
        if meta.get("version") != VERSION:
            raise BlockMaxError(f"{folder / _META} is a version {meta.get('version')} block-max index; rewrite it "
                                "with `splade-lucene blockmax`")
        if table is None:
            table = ImpactTable.load(index_dir)
            if table is None:
                raise BlockMaxError(f"{index_dir} has no impact table: its block-max index has no postings to match")
        if meta["table"] != _table_identity(index_dir):
            raise BlockMaxError(f"{folder / _META} was built from other postings than {index_dir / TABLE_DIR} holds "
                                "now (another build of the index or of its table); rewrite it with "
                                "`splade-lucene blockmax`")
        arrays = {}
        for name in ARRAYS:
            path = folder / f"{name}.npy"
            expected = meta["files"].get(f"{name}.npy")
            if expected is None or not path.is_file():
                raise BlockMaxError(f"{path} is missing; rewrite the block-max index with `splade-lucene blockmax`")
            if path.stat().st_size != expected["bytes"]:
                raise BlockMaxError(f"{path} is {path.stat().st_size} bytes, not the {expected['bytes']} written "
                                    "(truncated or replaced); rewrite it with `splade-lucene blockmax`")
            if verify and _crc(path) != expected["crc32"]:
                raise BlockMaxError(f"{path} has changed since it was written (its CRC-32 differs); rewrite it "
                                    "with `splade-lucene blockmax`")
            try:
                arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)
            except (OSError, ValueError) as err:
                raise BlockMaxError(f"{path} is damaged ({err}); rewrite it with `splade-lucene blockmax`") from err
        index = cls(table, arrays, int(meta["block"]), group)
        n_terms = len(table.terms)
        if (len(arrays["perm"]) != table.num_docs or len(arrays["fwd_term"]) != table.postings
                or len(arrays["sparse_off"]) != n_terms + 1 or len(arrays["dense_row"]) != n_terms
                or arrays["dense_max"].shape[1:] != (index.num_blocks,)):
            raise BlockMaxError(f"{folder} does not match {index_dir / TABLE_DIR}: array lengths disagree; rewrite it "
                                "with `splade-lucene blockmax`")
        index.meta = meta
        index.group_max  # derived now: the first search is not the one to wait for it
        return index

    @property
    def group_max(self) -> np.ndarray:
        """Each dense row's maxima over the groups of :attr:`group` blocks (derived once)."""
        if self._group_max is None:
            self._group_max = group_maxima(self.arrays["dense_max"], self.group)
        return self._group_max

    @property
    def term_max(self) -> np.ndarray:
        """Each term's highest impact (from the impact table: its first run's maximum)."""
        if self._term_max is None:
            a = self.table.arrays
            first = np.minimum(a["term_runs"][:-1], max(0, len(a["run_max"]) - 1))
            has = a["term_runs"][1:] > a["term_runs"][:-1]
            self._term_max = np.where(has, a["run_max"][first] if len(a["run_max"]) else 0, 0).astype(np.int64)
        return self._term_max

    @property
    def nbytes(self) -> int:
        """Bytes of everything the engine keeps (the doc id ranks of the impact table aside): its files
        and the groups' maxima derived from them in memory."""
        derived = self.group_max.nbytes if self.group > 1 else 0
        return int(sum(a.nbytes for a in self.arrays.values())) + derived

    def top(self, terms: dict[str, int], k: int, *, alpha: float = 1.0, query_terms: int | None = None,
            stats: np.ndarray | None = None) -> list[tuple[int, float]] | None:
        """The top ``k`` (Lucene docid, score): Lucene's hits where ``alpha`` is 1 and ``query_terms``
        None; ``None`` for a query left to Lucene (as :meth:`ImpactTable.top`). Approximate settings
        may miss documents of the exact top k, never change a score: ``alpha`` below 1 skips the blocks
        whose bound times alpha is below the k-th score; ``query_terms`` bounds the blocks with the
        query's N strongest terms only (weight x the term's highest impact; every term still scores)."""
        alpha = check_alpha(alpha)
        query_terms = check_query_terms(query_terms)
        query = self.table.query_arrays(terms)
        if query is None:
            return None
        q_terms, q_weights = query
        n_bound = None
        if query_terms is not None and len(q_terms) > query_terms:
            # the strongest terms first (weight x the term's highest impact): they alone bound the blocks
            order = np.argsort(-(q_weights * self.term_max[q_terms]), kind="stable")
            q_terms, q_weights, n_bound = q_terms[order], q_weights[order], query_terms
        scratch = self._scratch
        if getattr(scratch, "space", None) is None:
            scratch.space = scratch_space(self.num_blocks, self.group, len(self.table.terms))
        rows, scores = search(self.arrays, self.block, self.group, self.group_max, self.table.id_rank, q_terms,
                              q_weights, int(k), scratch.space, alpha, stats, n_bound)
        return list(zip(rows.tolist(), scores.astype(np.float64).tolist()))
