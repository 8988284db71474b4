"""A worker's request metrics in Prometheus's text format: requests by route and status, a latency
histogram by route, errors, requests in flight and the index generation. Each worker process keeps
its own (the ``worker`` label tells them apart)."""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections import defaultdict

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.sums: dict[str, float] = defaultdict(float)
        self.in_flight = 0
        self.generation = 0
        self.reload_failures = 0

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finished(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.requests[(route, status)] += 1
            self.buckets[route][bisect_left(BUCKETS, seconds)] += 1
            self.sums[route] += seconds

    def render(self) -> str:
        worker = f'worker="{os.getpid()}"'
        lines = ["# HELP splade_lucene_requests_total Requests answered, by route and HTTP status.",
                 "# TYPE splade_lucene_requests_total counter"]
        with self._lock:
            for (route, status), n in sorted(self.requests.items()):
                lines.append(f'splade_lucene_requests_total{{{worker},route="{route}",status="{status}"}} {n}')
            lines += ["# HELP splade_lucene_errors_total Requests answered with a server error (5xx), by route.",
                      "# TYPE splade_lucene_errors_total counter"]
            errors: dict[str, int] = defaultdict(int)
            for (route, status), n in self.requests.items():
                if status >= 500:
                    errors[route] += n
            for route in sorted({r for r, _ in self.requests}):
                lines.append(f'splade_lucene_errors_total{{{worker},route="{route}"}} {errors[route]}')
            lines += ["# HELP splade_lucene_request_seconds Time from a request's arrival to its answer.",
                      "# TYPE splade_lucene_request_seconds histogram"]
            for route, counts in sorted(self.buckets.items()):
                total = 0
                for bound, n in zip(BUCKETS + (float("inf"),), counts):
                    total += n
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(f'splade_lucene_request_seconds_bucket{{{worker},route="{route}",le="{le}"}} {total}')
                lines.append(f'splade_lucene_request_seconds_sum{{{worker},route="{route}"}} {self.sums[route]:.6f}')
                lines.append(f'splade_lucene_request_seconds_count{{{worker},route="{route}"}} {total}')
            lines += ["# HELP splade_lucene_requests_in_flight Requests being answered now.",
                      "# TYPE splade_lucene_requests_in_flight gauge",
                      f"splade_lucene_requests_in_flight{{{worker}}} {self.in_flight}",
                      "# HELP splade_lucene_index_generation Reloads of the indexes so far, plus one.",
                      "# TYPE splade_lucene_index_generation gauge",
                      f"splade_lucene_index_generation{{{worker}}} {self.generation}",
                      "# HELP splade_lucene_reload_failures_total Reloads whose new build did not open.",
                      "# TYPE splade_lucene_reload_failures_total counter",
                      f"splade_lucene_reload_failures_total{{{worker}}} {self.reload_failures}"]
        return "\n".join(lines) + "\n"
