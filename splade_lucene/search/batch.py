"""Many queries at once: checked, then shared among threads."""

from __future__ import annotations

from ..core.errors import SettingError
from .encoders import check_query


def check_batch(queries: dict[str, dict[str, int]], k: int, threads: int) -> None:
    if k < 1:
        raise SettingError(f"k must be at least 1, not {k}")
    if threads < 1:
        raise SettingError(f"threads must be at least 1, not {threads}")
    for terms in queries.values():
        check_query(terms)



def run_batch(search, queries: dict[str, dict[str, int]], k: int, threads: int) -> dict:
    check_batch(queries, k, threads)
    if threads == 1 or len(queries) < 2:
        return {qid: search(terms, k) for qid, terms in queries.items()}
    from concurrent.futures import ThreadPoolExecutor

    items = list(queries.items())
    shares = [items[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        found = dict(hit for share in pool.map(
            lambda share: [(qid, search(terms, k)) for qid, terms in share], shares) for hit in share)
    return {qid: found[qid] for qid in queries}
