"""The result browser: one plain HTML page, rendered on the server, with no script. A query box; the
query's terms with its expansions (terms its text lacks) marked; SPLADE's hits with their scores,
each hit's matched terms (expansions marked) and its strongest expansions; BM25's hits beside
them where the server holds a BM25 index. Every value is escaped."""

from __future__ import annotations

from html import escape

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:80em;padding:0 1em;color:#222}
form{display:flex;gap:.5em;margin-bottom:1em} #q{flex:1;font-size:1.1em;padding:.3em}
.columns{display:flex;gap:2em} .columns section{flex:1;min-width:0}
.term{display:inline-block;margin:.1em .2em;padding:0 .3em;border-radius:3px;background:#eef}
.term.expansion{background:#fde9c9;border:1px dashed #c80} .term sub{color:#666}
li.hit{margin-bottom:1em} .docid{font-family:monospace;font-weight:bold} .score{color:#555;margin-left:.5em}
.title{font-weight:600} .text{color:#333} .legend{color:#666;font-size:.9em} .error{color:#a00}
"""


def _term(term: str, label: str, expansion: bool | None) -> str:
    cls = "term expansion" if expansion else "term"
    mark = " title=\"expansion: not in the text\"" if expansion else ""
    return (f'<span class="{cls}" data-term="{escape(term)}"{mark}>{escape(term)} '
            f'<sub>{escape(label)}</sub></span>')


def _hits(hits: list[dict], section: str, heading: str) -> str:
    items = []
    for h in hits:
        parts = [f'<div class="head"><span class="docid">{escape(h["docid"])}</span>'
                 f'<span class="score">{h["score"]:.6g}</span></div>']
        if h.get("title"):
            parts.append(f'<div class="title">{escape(h["title"])}</div>')
        if h.get("text"):
            text = h["text"][len(h.get("title") or ""):].strip() if h.get("title") else h["text"]
            parts.append(f'<div class="text">{escape(text[:400])}{"…" if len(text) > 400 else ""}</div>')
        if h.get("matched") is not None:
            terms = " ".join(_term(m["term"], f'{m["query_weight"]}×{m["doc_weight"]}', m["expansion"])
                             for m in h["matched"])
            parts.append(f'<div class="matched">matched: {terms}</div>')
        if h.get("expansions"):
            terms = " ".join(_term(t, "", True) for t in h["expansions"][:15])
            parts.append(f'<div class="expansions">document expansions: {terms}</div>')
        items.append(f'<li class="hit" data-rank="{h["rank"]}" data-docid="{escape(h["docid"])}" '
                     f'data-score="{h["score"]!r}">{"".join(parts)}</li>')
    return (f'<section id="{section}"><h2>{escape(heading)}</h2>'
            f'<ol class="hits">{"".join(items) or "<p>no hits</p>"}</ol></section>')


def render(*, names: list[str], index: str, query: str = "", k: int = 10, result: dict | None = None,
           bm25: list[dict] | None = None, error: str | None = None) -> str:
    options = "".join(f'<option value="{escape(n)}"{" selected" if n == index else ""}>{escape(n)}</option>'
                      for n in names)
    body = [f'<form method="get" action="/"><input id="q" name="q" value="{escape(query)}" '
            f'placeholder="a question or keywords" autofocus><select id="index" name="index">{options}</select>'
            f'<input id="k" name="k" type="number" min="1" max="100" value="{k}">'
            f'<button id="search" type="submit">Search</button></form>']
    if error:
        body.append(f'<p class="error" id="error">{escape(error)}</p>')
    if result is not None:
        terms = " ".join(_term(t["term"], str(t["weight"]), t["expansion"]) for t in result.get("query_terms", []))
        body.append(f'<section id="query-terms"><h2>Query terms</h2><p>{terms}</p><p class="legend">dashed: '
                    'expansions, terms the query text lacks; numbers: integer weights (query × document)</p></section>')
        columns = [_hits(result["hits"], "splade", f'SPLADE: {result["index"]} (build {result["build"]})')]
        if bm25 is not None:
            columns.append(_hits(bm25, "bm25", "BM25"))
        body.append(f'<div class="columns">{"".join(columns)}</div>')
    title = f"splade-lucene: {query}" if query else "splade-lucene"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width"><style>{STYLE}</style></head>'
            f'<body>{"".join(body)}</body></html>')
