"""The servers as users run them: `splade-lucene serve` and `splade-lucene mcp` as processes on
loopback (a free port each), driven by real clients: httpx under load while builds are swapped and a
worker is stopped, the MCP SDK's own client over stdio and streamable HTTP, and the result browser in
a headless Chromium through selenium. Each server is started with the kernel set to stop it should
the test process die, and every wait is on a line the server prints or an answer it gives."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from conftest import REPO, unavailable

from splade_lucene.core.faults import ENVIRONMENT
from splade_lucene.serving.server import stop_with_parent
from splade_lucene.serving.service import build_id

START_TIMEOUT = 240  # seconds for a server to load torch, the JVM and an index on a busy machine


class ServerProcess:
    """A command of this package run as a server; its stderr read line by line as it comes."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "splade_lucene", *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=stop_with_parent, env={**os.environ, **(env or {})})
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match:
        """The first line from now on that matches ``pattern``; fails if the process ends first."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {timeout} s:\n{''.join(self.log)}") from None
            if line is None:
                raise AssertionError(f"the server ended (status {self.proc.wait()}) before printing {pattern!r}:\n"
                                     + "".join(self.log))
            self.log.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


@pytest.fixture
def started():
    servers: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        servers.append(ServerProcess(*args, env=env))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def answers(cranfield, shards):
    """Two builds (all of Cranfield, and one shard of it) and each one's top 10 for 40 queries."""
    from splade_lucene.search.searcher import Searcher

    queries = dict(list(cranfield["encoded"].items())[:40])
    builds = {}
    for index in (cranfield["vector_index"], shards["indexes"][0]):
        with Searcher(index, cranfield["query_encoder"]) as searcher:
            hits = searcher.batch_search_terms(queries, k=10)
        builds[build_id(Path(index))] = {q: [[h.docid, h.score] for h in hs] for q, hs in hits.items()}
    assert len(builds) == 2 and list(builds.values())[0] != list(builds.values())[1]
    return queries, builds


def point(link: Path, target: Path) -> None:
    """Switch the symbolic link ``link`` to ``target`` in one step."""
    fresh = link.with_name(link.name + ".new")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(target)
    os.replace(fresh, link)


def test_reloads_and_a_stopped_worker_fail_no_request(cranfield, shards, answers, started, tmp_path):
    queries, builds = answers
    link = tmp_path / "current"
    link.symlink_to(cranfield["vector_index"])
    server = started("serve", "--index", f"cranfield={link}", "--port", "0", "--workers", "2", "--threads", "1")
    url = server.wait_for(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
    workers = [int(server.wait_for(r"worker (\d+) ready").group(1)) for _ in range(2)]

    results: list[tuple[str, object]] = []
    answered = threading.Condition()
    drain_began = threading.Event()
    stop = threading.Event()

    def load(offset: int) -> None:
        qids = list(queries)
        with httpx.Client(base_url=url, timeout=60) as client:
            i = offset
            while not stop.is_set():
                qid = qids[i % len(qids)]
                i += 1
                try:
                    r = client.post("/search", json={"terms": queries[qid], "k": 10})
                    outcome = (r.status_code, r.json())
                except httpx.TransportError as exc:
                    outcome = ("refused" if drain_began.is_set() else "failed", repr(exc))
                with answered:
                    results.append((qid, outcome))
                    answered.notify_all()

    def served(n: int) -> None:  # wait until the load has had n more answers
        with answered:
            target = len(results) + n
            assert answered.wait_for(lambda: len(results) >= target, timeout=START_TIMEOUT), "the load stalled"

    loaders = [threading.Thread(target=load, args=(i * 7,)) for i in range(4)]
    for t in loaders:
        t.start()
    try:
        served(50)
        for generation, target in enumerate([shards["indexes"][0], cranfield["vector_index"],
                                             shards["indexes"][0]], start=2):
            point(link, target)
            assert httpx.post(url + "/admin/reload").status_code == 202
            for _ in workers:
                server.wait_for(rf"reloaded: generation {generation}")
            served(50)
        drain_began.set()
        os.kill(workers[0], signal.SIGTERM)
        replacement = int(server.wait_for(r"worker (\d+) ready").group(1))
        assert replacement not in workers
        served(100)
    finally:
        stop.set()
        for t in loaders:
            t.join()
    statuses = [outcome[0] for _, outcome in results]
    assert "failed" not in statuses and all(s in (200, "refused") for s in statuses), \
        [o for _, o in results if o[0] not in (200, "refused")][:3]
    seen = set()
    for qid, (status, body) in results:
        if status == 200:
            assert [[h["docid"], h["score"]] for h in body["hits"]] == builds[body["build"]][qid]
            seen.add((body["build"], body["generation"]))
    assert {b for b, _ in seen} == set(builds), "both builds answered"
    assert statuses.count("refused") <= 4, "at most the connections open to the stopped worker"
    assert server.stop() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz")


def test_sigterm_drains_requests_in_flight(cranfield, started):
    """The server stops itself (SIGSTOP) inside a batch's first search; the test learns it through
    waitpid, sends SIGTERM and lets it go on: the batch is answered in full, then the server exits."""
    from splade_lucene.search.searcher import Searcher

    texts = cranfield["queries"][:50]
    server = started("serve", "--index", str(cranfield["vector_index"]), "--port", "0", "--threads", "1",
                     env={ENVIRONMENT: "serve.request:stop"})
    url = server.wait_for(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
    server.wait_for("ready")
    answer: list = []

    def batch():
        body = {"k": 100, "queries": [{"qid": q, "query": t} for q, t in texts]}
        answer.append(httpx.post(url + "/batch_search", json=body, timeout=300))

    thread = threading.Thread(target=batch)
    thread.start()
    _, status = os.waitpid(server.proc.pid, os.WUNTRACED)  # the server is inside the batch's first search
    assert os.WIFSTOPPED(status)
    server.proc.send_signal(signal.SIGTERM)
    os.kill(server.proc.pid, signal.SIGCONT)
    thread.join()
    assert server.proc.wait(timeout=120) == 0
    assert answer[0].status_code == 200
    with Searcher(cranfield["vector_index"], cranfield["query_encoder"]) as searcher:
        want = searcher.batch_search(texts, k=100)
    assert {q: [[h["docid"], h["score"]] for h in hits] for q, hits in answer[0].json()["results"].items()} == \
        {q: [[h.docid, h.score] for h in hits] for q, hits in want.items()}
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/healthz")


def test_mcp_over_stdio_and_http_with_the_sdk_client(cranfield, started, tmp_path):
    import anyio
    import httpx2
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client

    from splade_lucene.search.searcher import Searcher

    qid, text = cranfield["queries"][3]
    with Searcher(cranfield["vector_index"], cranfield["query_encoder"]) as searcher:
        want = [[h.docid, h.score] for h in searcher.search(text, k=5)]
    index = str(cranfield["vector_index"])

    async def check(target) -> None:
        async with Client(target) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert tools == {"search", "get_document", "explain", "list_indexes"}
            result = await client.call_tool("search", {"query": text, "k": 5})
            assert not result.is_error
            hits = result.structured_content["hits"]
            assert [[h["docid"], h["score"]] for h in hits] == want and hits[0]["text"]
            doc = await client.call_tool("get_document", {"docid": want[0][0]})
            assert doc.structured_content["text"] == hits[0]["text"]
            ex = await client.call_tool("explain", {"query": text, "docid": want[0][0]})
            assert ex.structured_content["sum_of_contributions"] == ex.structured_content["score"]
            bad = await client.call_tool("search", {"query": text, "k": 0})
            assert bad.is_error and "k must be between 1 and" in bad.content[0].text
            missing = await client.call_tool("get_document", {"docid": "no-such-doc"})
            assert missing.is_error and "no document" in missing.content[0].text

    stdio = StdioServerParameters(command=sys.executable, args=["-m", "splade_lucene", "mcp", "--index", index,
                                                                "--threads", "1"], cwd=str(REPO))
    anyio.run(check, stdio)
    server = started("mcp", "--transport", "http", "--index", index, "--port", "0", "--threads", "1")
    url = server.wait_for(r"listening on (http://127\.0\.0\.1:\d+/mcp)").group(1)
    anyio.run(check, url)
    key = tmp_path / "key"
    key.write_text("an-mcp-key-0123456789\n")
    guarded = started("mcp", "--transport", "http", "--index", index, "--port", "0", "--threads", "1",
                      "--api-key-file", str(key))
    url = guarded.wait_for(r"listening on (http://127\.0\.0\.1:\d+/mcp)").group(1)
    assert httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 401

    async def with_key():
        headers = {"Authorization": "Bearer an-mcp-key-0123456789"}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, read=300)) as http:
            await check(streamable_http_client(url, http_client=http))

    anyio.run(with_key)


def test_result_browser_in_headless_chromium(cranfield, started, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    from splade_lucene.formats.metadata import read_collection_metadata
    from splade_lucene.search.bm25 import BM25Searcher, build_bm25_index
    from splade_lucene.search.searcher import Searcher

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver_path:
        unavailable("Chromium and its driver are not installed (scripts/env.sh installs them with apt-get)")
    corpus = read_collection_metadata(cranfield["base"] / "vector")["corpus"]
    build_bm25_index(corpus, tmp_path / "bm25")
    _, text = cranfield["queries"][5]
    with Searcher(cranfield["vector_index"], cranfield["query_encoder"]) as searcher:
        want = [(h.docid, h.score) for h in searcher.search(text, k=10)]
        words = set(searcher.query_encoder.tokenizer.tokenize(text))
    bm25 = BM25Searcher(tmp_path / "bm25")
    want_bm25 = [h.docid for h in bm25.search(text, 10)]
    bm25.close()
    server = started("serve", "--index", f"cranfield={cranfield['vector_index']}", "--bm25", str(tmp_path / "bm25"),
                     "--port", "0", "--threads", "1")
    url = server.wait_for(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
    server.wait_for("ready")

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.get(url + "/")
        box = driver.find_element(By.ID, "q")
        box.send_keys(text)
        driver.find_element(By.ID, "search").click()
        WebDriverWait(driver, 120).until(expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, "#splade li.hit")))
        hits = [(li.get_attribute("data-docid"), float(li.get_attribute("data-score")))
                for li in driver.find_elements(By.CSS_SELECTOR, "#splade li.hit")]
        assert hits == want
        expansions = [e.get_attribute("data-term")
                      for e in driver.find_elements(By.CSS_SELECTOR, "#query-terms .term.expansion")]
        plain = [e.get_attribute("data-term")
                 for e in driver.find_elements(By.CSS_SELECTOR, "#query-terms .term:not(.expansion)")]
        assert expansions and not set(expansions) & words and set(plain) <= words
        matched = driver.find_elements(By.CSS_SELECTOR, "#splade li.hit .matched .term")
        assert matched, "each hit shows its matched terms"
        assert [li.get_attribute("data-docid") for li in driver.find_elements(By.CSS_SELECTOR, "#bm25 li.hit")] \
            == want_bm25
        artifacts = Path(os.environ.get("SPLADE_LUCENE_ARTIFACTS", REPO / "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(artifacts / "result-browser.png"))
        assert (artifacts / "result-browser.png").stat().st_size > 10_000
    finally:
        driver.quit()
