#!/usr/bin/env python
"""Load benchmark of `splade-lucene serve` on loopback, against an in-process ``Searcher`` on the same
index and queries, in one session. Bounded: every configuration stops after --requests answers (text
queries: --text-requests) or --seconds, whichever comes first; servers are stopped at the end.

For --workers 1 and 2 (a server each, the memory engine, the default threads per worker: cores /
workers): pre-encoded queries (``POST /search {"terms": ...}``) and text queries (``GET /search?q=``,
encoding included) at concurrency 1, 8 and 32 (keep-alive connections of one asyncio client speaking
plain HTTP/1.1), k=10. Rows: throughput, client-side p50/p99 latency, and whether
every answer equalled the in-process one. The in-process rows time ``Searcher.search_terms`` and
``Searcher.search`` one query at a time; the HTTP overhead is the server's p50 at concurrency 1 less
the in-process p50.

Then the chaos run: two workers under --chaos-concurrency clients of pre-encoded queries while the
index is reloaded 3 times (``POST /admin/reload``, each awaited in the server's log) and one worker
gets SIGTERM (awaited until its replacement is ready): failed requests (a 5xx, a wrong answer, or a
connection error before the worker was stopped) and refused ones (connection errors after).

    bash scripts/env.sh python scripts/bench_serve.py --index DATA/bench/scifact/index --json runs/serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from splade_lucene.formats.collection import read_queries  # noqa: E402
from splade_lucene.search.searcher import Searcher  # noqa: E402

LENGTH = re.compile(rb"content-length: *(\d+)", re.IGNORECASE)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Server:
    def __init__(self, index: str, workers: int):
        self.proc = subprocess.Popen([sys.executable, "-m", "splade_lucene", "serve", "--index", f"bench={index}",
                                      "--port", "0", "--workers", str(workers), "--max-k", "1000"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.proc.stderr] and self.lines.put(None),
                         daemon=True).start()
        self.port = int(self.wait(r"listening on http://127\.0\.0\.1:(\d+)").group(1))
        self.workers = [int(self.wait(r"worker (\d+) ready").group(1)) for _ in range(workers)]

    def wait(self, pattern: str, timeout: float = 300) -> re.Match:
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise SystemExit(f"the server ended before printing {pattern!r}")
            if m := re.search(pattern, line):
                return m

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


def load(port: int, requests: list[tuple[str, str, bytes | None, object]], concurrency: int, limit: int,
         seconds: float, check, events=None) -> dict:
    """``concurrency`` keep-alive connections of one asyncio client (plain HTTP/1.1 over sockets:
    light, so that the client takes little of the cores the server needs) sending ``requests``
    (method, path, body, key) round-robin until ``limit`` answers or ``seconds``; each answer checked
    with ``check(key, status, body)``. ``events(drain)`` runs meanwhile in this thread."""
    latencies: list[float] = []
    outcome = {"ok": 0, "wrong": 0, "server_error": 0, "failed": 0, "refused": 0}
    drain = threading.Event()
    raw = []
    for method, path, body, key in requests:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        raw.append(((head + "\r\n").encode() + (body or b""), key))

    async def client() -> None:
        counter = iter(range(10 ** 12))
        deadline = time.perf_counter() + seconds

        async def connection(offset: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            while time.perf_counter() < deadline:
                n = next(counter)
                if n >= limit:
                    break
                request, key = raw[(n + offset) % len(raw)]
                started = time.perf_counter()
                try:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    data = await reader.readexactly(int(LENGTH.search(head).group(1)))
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, AttributeError):
                    writer.close()
                    outcome["refused" if drain.is_set() else "failed"] += 1
                    try:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    except OSError:
                        return
                    continue
                latencies.append(time.perf_counter() - started)
                if status >= 500:
                    outcome["server_error"] += 1
                elif check(key, status, data):
                    outcome["ok"] += 1
                else:
                    outcome["wrong"] += 1
            writer.close()

        await asyncio.gather(*(connection(i * 13) for i in range(concurrency)))

    started = time.perf_counter()
    thread = threading.Thread(target=asyncio.run, args=(client(),))
    thread.start()
    if events is not None:
        events(drain)
    thread.join()
    wall = time.perf_counter() - started
    return {"answers": len(latencies), "seconds": round(wall, 2), "throughput_qps": round(len(latencies) / wall, 1),
            "p50_ms": round(pct(latencies, 0.5) * 1000, 3), "p99_ms": round(pct(latencies, 0.99) * 1000, 3),
            **outcome}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="a SciFact index with its impact table")
    ap.add_argument("--queries", default=str(REPO.parent / "shared" / "datasets" / "scifact" / "queries.jsonl"))
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--text-requests", type=int, default=600)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--chaos-concurrency", type=int, default=8)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    queries = read_queries(args.queries)[:300]
    rows = []
    with Searcher(args.index) as searcher:
        encoded = {q: searcher.query_encoder.encode(t) for q, t in queries}
        want = {q: [[h.docid, h.score] for h in searcher.search_terms(encoded[q], 10)] for q, _ in queries}
        for mode, fn in (("terms", lambda q, t: searcher.search_terms(encoded[q], 10)),
                         ("text", lambda q, t: searcher.search(t, 10))):
            times = []
            for q, t in queries * (3 if mode == "terms" else 1):
                s = time.perf_counter()
                fn(q, t)
                times.append(time.perf_counter() - s)
            rows.append({"where": "in-process", "workers": None, "queries": mode, "concurrency": 1,
                         "p50_ms": round(statistics.median(times) * 1000, 3),
                         "p99_ms": round(pct(times, 0.99) * 1000, 3)})
            print(json.dumps(rows[-1]), flush=True)

    def check(qid, status, data) -> bool:
        return status == 200 and [[h["docid"], h["score"]] for h in json.loads(data)["hits"]] == want[qid]

    terms_requests = [("POST", "/search", json.dumps({"terms": encoded[q], "k": 10}).encode(), q) for q, _ in queries]
    text_requests = [("GET", f"/search?k=10&q={quote(t)}", None, q) for q, t in queries]
    for workers in map(int, args.workers.split(",")):
        server = Server(args.index, workers)
        try:
            for mode, requests, limit in (("terms", terms_requests, args.requests),
                                          ("text", text_requests, args.text_requests)):
                for c in map(int, args.concurrency.split(",")):
                    load(server.port, requests, c, min(200, limit), args.seconds, check)  # warm up
                    row = {"where": "http", "workers": workers, "queries": mode, "concurrency": c,
                           **load(server.port, requests, c, limit, args.seconds, check)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            server.stop()

    server = Server(args.index, 2)
    chaos: dict = {}

    def events(drain: threading.Event) -> None:
        time.sleep(1)
        for generation in range(2, 5):
            conn = http.client.HTTPConnection("127.0.0.1", server.port)
            conn.request("POST", "/admin/reload")
            assert conn.getresponse().status == 202
            for _ in server.workers:
                server.wait(rf"reloaded: generation {generation}")
        drain.set()
        os.kill(server.workers[0], signal.SIGTERM)
        chaos["replacement_ready"] = int(server.wait(r"worker (\d+) ready").group(1))
        time.sleep(1)

    try:
        row = {"where": "http-chaos", "workers": 2, "queries": "terms", "concurrency": args.chaos_concurrency,
               "reloads": 3, "worker_sigterm": 1,
               **load(server.port, terms_requests, args.chaos_concurrency, 10 ** 9, args.seconds, check, events)}
    finally:
        row["exit_status"] = server.stop()
    rows.append(row)
    print(json.dumps(row), flush=True)

    inproc = {r["queries"]: r["p50_ms"] for r in rows if r["where"] == "in-process"}
    print("\n| workers | queries | concurrency | answers/s | p50 ms | p99 ms | all equal |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["where"] == "http":
            print(f"| {r['workers']} | {r['queries']} | {r['concurrency']} | {r['throughput_qps']} | {r['p50_ms']} | "
                  f"{r['p99_ms']} | {r['wrong'] == r['server_error'] == r['failed'] == 0} |")
    for mode in ("terms", "text"):
        one = next((r for r in rows if r["where"] == "http" and r["workers"] == 1 and r["queries"] == mode
                    and r["concurrency"] == 1), None)
        if one:
            print(f"HTTP overhead at concurrency 1, {mode}: {one['p50_ms'] - inproc[mode]:.3f} ms p50 "
                  f"({one['p50_ms']} vs {inproc[mode]} in process)")
        best = {w: max((r["throughput_qps"] for r in rows if r["where"] == "http" and r["workers"] == w
                        and r["queries"] == mode), default=None) for w in (1, 2)}
        if best[1] and best[2]:
            print(f"throughput, {mode}: 2 workers {best[2]} / 1 worker {best[1]} answers/s = {best[2] / best[1]:.2f}x")
    print(f"chaos: {row['ok']} answers equal, {row['wrong']} wrong, {row['server_error']} 5xx, {row['failed']} failed, "
          f"{row['refused']} refused after the stop; server exit {row['exit_status']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
