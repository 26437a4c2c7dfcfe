"""HTML building blocks of the report: the page shell, sections, tables, images, and the example browser.

The page is one self-contained file: CSS and JavaScript inline, figures as base64 PNG ``data:`` URIs,
the browser's data as an inline JSON block. Nothing is fetched from the network. Every text that comes
from the data is escaped (tables, headings) or inserted with ``textContent`` (the browser), never as
markup. When its script has run, the page sets ``document.body.dataset.ready = "1"`` (the headless
check waits for it). With several influence methods, ``method_picker`` puts a selector in the
navigation bar and ``METHOD_JS`` shows the chosen method's parts (``method_block``) and switches the
browser; without JavaScript every part is shown.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

CSS = """
:root { --fg: #1d1d1f; --muted: #5f6368; --line: #d9dce1; --bg: #ffffff; --soft: #f5f7fa; --accent: #1f5fa8; --pos: #2b7bba; --neg: #c0392b; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans CJK SC", sans-serif; color: var(--fg); background: var(--bg); }
header { background: #17324d; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c9d6e3; }
nav { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid var(--line); padding: 8px 28px; display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; }
main { max-width: 1280px; margin: 0 auto; padding: 8px 28px 40px; }
section { border-bottom: 1px solid var(--line); padding: 18px 0 22px; scroll-margin-top: 40px; }
h2 { font-size: 19px; margin: 6px 0 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.tag { display: inline-block; font-size: 12px; color: var(--muted); background: var(--soft); border: 1px solid var(--line); border-radius: 10px; padding: 0 8px; margin-left: 8px; vertical-align: middle; font-weight: normal; }
.reading { font-size: 16px; background: #eef5fc; border-left: 4px solid var(--accent); padding: 8px 12px; margin: 10px 0; }
.na { background: #fff6e5; border-left: 4px solid #e6a23c; padding: 8px 12px; margin: 10px 0; }
.note { color: var(--muted); font-size: 13px; margin: 4px 0; }
.warning { background: #fdecea; border-left: 4px solid var(--neg); color: #7a1f16; padding: 8px 12px; margin: 10px 0; font-size: 16px; }
figure { margin: 12px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: 13px; color: var(--muted); }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: var(--soft); }
td.text, th.text { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
.tables { display: flex; flex-wrap: wrap; gap: 8px 32px; align-items: flex-start; }
.scroll { overflow-x: auto; max-width: 100%; }
details.more > summary { cursor: pointer; color: var(--accent); font-size: 13px; margin: 6px 0; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; }
pre { background: var(--soft); border: 1px solid var(--line); padding: 10px; overflow: auto; font-size: 12px; max-height: 480px; }
.controls { display: flex; flex-wrap: wrap; gap: 10px 18px; align-items: center; margin: 8px 0 12px; }
.controls input[type=search] { width: 320px; max-width: 100%; padding: 4px 8px; font-size: 14px; }
.controls select { padding: 3px 6px; font-size: 14px; }
#b-count { color: var(--muted); font-size: 13px; }
details.card { border: 1px solid var(--line); border-radius: 6px; margin: 6px 0; background: #fff; }
details.card > summary { cursor: pointer; padding: 6px 10px; display: flex; gap: 10px; align-items: baseline; }
details.card[open] > summary { background: var(--soft); border-bottom: 1px solid var(--line); }
.card .body { padding: 6px 10px 10px; display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
@media (max-width: 900px) { .card .body { grid-template-columns: 1fr; } }
.lang { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; background: #e8eef6; border-radius: 4px; padding: 0 5px; }
.lbl { color: var(--muted); font-size: 12px; white-space: nowrap; }
.ttext { flex: 1; }
.card table { width: 100%; }
.card h4 { margin: 4px 0; font-size: 13px; }
.card h4.pos { color: var(--pos); }
.card h4.neg { color: var(--neg); }
td.score { font-variant-numeric: tabular-nums; white-space: nowrap; }
button { font-size: 13px; padding: 4px 12px; cursor: pointer; }
footer { color: var(--muted); font-size: 12px; padding: 16px 28px; }
.method-pick { margin-left: auto; font-size: 13px; }
.method-pick select { font-size: 13px; padding: 1px 4px; }
.method-block { border-left: 3px solid var(--line); padding: 0 0 4px 12px; margin: 14px 0; }
.method-block > h3.method-name { margin-top: 8px; }
.method-block > h3.method-name .leaves { font-weight: normal; color: var(--muted); font-size: 12px; }
ul.findings { padding-left: 20px; }
ul.findings li { margin: 4px 0; }
ul.findings li.holds strong { color: #1e7b34; }
ul.findings li.differs strong { color: var(--neg); }
ul.findings li.info strong { color: var(--muted); }
"""

# The method selector: shows the parts of the chosen method only (all parts without JavaScript), and
# tells the example browser (a "methodchange" event on the document).
METHOD_JS = r"""
(function () {
  "use strict";
  var pick = document.getElementById("method-select");
  if (!pick) { return; }
  function show() {
    var m = pick.value;
    document.querySelectorAll(".method-block").forEach(function (b) { b.hidden = !!m && b.dataset.method !== m; });
    document.dispatchEvent(new CustomEvent("methodchange", { detail: m }));
  }
  pick.addEventListener("change", show);
  show();
})();
"""

# The example browser: filters by language and text, renders cards lazily (tables built on first open).
BROWSER_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("browser-data").textContent);
  var tests = data.tests;
  var langSel = document.getElementById("b-lang");
  var query = document.getElementById("b-q");
  var deep = document.getElementById("b-deep");
  var list = document.getElementById("b-list");
  var count = document.getElementById("b-count");
  var more = document.getElementById("b-more");
  var PAGE = 50;
  var shown = PAGE;
  var matches = tests;
  var method = data.method;
  var pick = document.getElementById("method-select");
  if (pick && pick.value) { method = pick.value; }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function fmt(x) {
    if (typeof x !== "number" || !isFinite(x)) { return "–"; }
    return Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(4);
  }
  function pct(x) {
    return (typeof x === "number" && isFinite(x)) ? Math.round(x) + "%" : "–";
  }
  function table(title, cls, rows) {
    var box = el("div");
    box.appendChild(el("h4", cls, title));
    var t = el("table");
    var head = el("tr");
    ["#", "lang", "text", "label", "score"].forEach(function (h) { head.appendChild(el("th", h === "#" || h === "score" ? "" : "text", h)); });
    var thead = el("thead"); thead.appendChild(head); t.appendChild(thead);
    var body = el("tbody");
    rows.forEach(function (r, i) {
      var info = data.train[r[0]] || ["", "", ""];
      var tr = el("tr");
      tr.appendChild(el("td", "", i + 1));
      var lc = el("td", "text"); lc.appendChild(el("span", "lang", info[0])); tr.appendChild(lc);
      tr.appendChild(el("td", "text", info[1]));
      tr.appendChild(el("td", "text lbl", info[2]));
      tr.appendChild(el("td", "score", fmt(r[1])));
      tr.title = r[0];
      body.appendChild(tr);
    });
    t.appendChild(body);
    box.appendChild(t);
    return box;
  }
  function card(r) {
    var mr = r.by_method[method];
    var d = el("details", "card");
    d.dataset.uid = r.uid;
    var s = el("summary");
    s.appendChild(el("span", "lang", r.lang));
    s.appendChild(el("span", "ttext", r.text));
    s.appendChild(el("span", "lbl", "gold: " + r.label + (r.pred && r.pred !== r.label ? " · predicted: " + r.pred : "")));
    s.appendChild(el("span", "lbl", (data.methods.length > 1 ? method + ": " : "") + "own language in top-" + data.k + ": " + pct(mr.own_pos) + " of positive, " + pct(mr.own_neg) + " of negative"));
    d.appendChild(s);
    d.addEventListener("toggle", function () {
      if (d.open && !d.dataset.filled) {
        var body = el("div", "body");
        body.appendChild(table("Most positively influential", "pos", mr.pos));
        body.appendChild(table("Most negatively influential", "neg", mr.neg));
        d.appendChild(body);
        d.dataset.filled = "1";
      }
    });
    return d;
  }
  function hit(r, needle, inTrain) {
    if (r.text.toLowerCase().indexOf(needle) >= 0 || r.uid.toLowerCase().indexOf(needle) >= 0) { return true; }
    if (!inTrain) { return false; }
    var mr = r.by_method[method];
    return mr.pos.concat(mr.neg).some(function (x) { return String((data.train[x[0]] || ["", ""])[1]).toLowerCase().indexOf(needle) >= 0; });
  }
  function render() {
    var frag = document.createDocumentFragment();
    matches.slice(0, shown).forEach(function (r) { frag.appendChild(card(r)); });
    list.replaceChildren(frag);
    count.textContent = matches.length + " of " + tests.length + " test examples";
    more.hidden = matches.length <= shown;
  }
  function update() {
    var lang = langSel.value;
    var needle = query.value.trim().toLowerCase();
    matches = tests.filter(function (r) {
      return (!lang || r.lang === lang) && (!needle || hit(r, needle, deep.checked));
    });
    shown = PAGE;
    render();
  }
  data.languages.forEach(function (l) {
    var o = el("option", "", l); o.value = l; langSel.appendChild(o);
  });
  langSel.addEventListener("change", update);
  query.addEventListener("input", update);
  deep.addEventListener("change", update);
  more.addEventListener("click", function () { shown += PAGE; render(); });
  document.addEventListener("methodchange", function (e) {
    method = e.detail && data.methods.indexOf(e.detail) >= 0 ? e.detail : data.method;
    update();
  });
  update();
  document.body.dataset.ready = "1";
})();
"""


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def verdict_paragraph(experiment: str, text: str, warning: bool = False) -> str:
    """The sentence of an experiment's section that the report's method comparison repeats (``find_verdict``);
    ``warning``: the comparison shows it as a warning."""
    flag = ' data-warning="1"' if warning else ""
    return f'<p class="reading" data-verdict="{esc(experiment)}"{flag}>{esc(text)}</p>'


def find_verdict(fragment: str, experiment: str) -> tuple[str, bool] | None:
    """(text, warning) of ``experiment``'s ``verdict_paragraph`` in a section fragment, or None when it has none."""
    found = re.search(rf'<p class="reading" data-verdict="{re.escape(esc(experiment))}"( data-warning="1")?>(.*?)</p>', fragment, re.S)
    return (html.unescape(found.group(2)), found.group(1) is not None) if found else None


def json_for_script(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``<`` can end the block)."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, default=str).replace("<", "\\u003c")


def png_img(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def fmt_number(x: Any) -> str:
    """Integers as they are, other numbers with 4 significant digits, missing values as a dash."""
    if x is None:
        return "–"
    if isinstance(x, bool | str):
        return str(x)
    if isinstance(x, int) or (hasattr(x, "dtype") and getattr(x.dtype, "kind", "") in "iu"):
        return str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "–"
    return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


def table_html(
    frame: pd.DataFrame,
    index: bool = False,
    formats: dict[str, Callable[[Any], str]] | None = None,
    text_columns: Sequence[str] = (),
    caption: str | None = None,
) -> str:
    """An escaped HTML table; numbers formatted compactly, text columns left-aligned."""
    formats = formats or {}
    cols = list(frame.columns)
    out = ['<div class="scroll"><table>']
    if caption:
        out.append(f"<caption class='note'>{esc(caption)}</caption>")
    head = ([f'<th class="text">{esc(frame.index.name or "")}</th>'] if index else []) + [
        f'<th class="{"text" if c in text_columns else ""}">{esc(c)}</th>' for c in cols
    ]
    out.append("<thead><tr>" + "".join(head) + "</tr></thead><tbody>")
    for idx, row in zip(frame.index, frame.itertuples(index=False)):
        cells = [f'<th class="text">{esc(idx)}</th>'] if index else []
        for c, v in zip(cols, row):
            if c in formats:
                s = formats[c](v)
            elif isinstance(v, str):
                s = v
            else:
                s = fmt_number(v)
            cells.append(f'<td class="{"text" if c in text_columns else ""}">{esc(s)}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def pct(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "–" if math.isnan(v) else f"{v:.1f}%"


def pvalue(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "–"
    return "< 0.001" if v < 0.001 else f"{v:.3g}"


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: str, footer: str, picker: str = "") -> str:
    links = "".join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t in nav) + picker
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{esc(title)}</title>
<link rel="icon" href="data:,">
<style>{CSS}</style>
</head>
<body>
<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>
<nav>{links}</nav>
<main>
{body}
</main>
<footer>{footer}</footer>
{f"<script>{METHOD_JS}</script>" if picker else ""}
</body>
</html>
"""


def warning_box(text: str) -> str:
    """A visible warning (red box) for something that undermines the results, e.g. a model that did not learn."""
    return f'<div class="warning" role="alert"><strong>Warning:</strong> {esc(text)}</div>'


def section(
    sid: str,
    title: str,
    reproduces: str | None,
    reading: str | None,
    content: str,
    not_applicable: str | None = None,
    notes: Sequence[str] = (),
) -> str:
    tag = f'<span class="tag">{esc(reproduces)}</span>' if reproduces else ""
    parts = [f'<section id="{esc(sid)}"><h2>{esc(title)}{tag}</h2>', *_body(reading, content, not_applicable, notes), "</section>"]
    return "\n".join(parts)


def _body(reading: str | None, content: str, not_applicable: str | None, notes: Sequence[str]) -> list[str]:
    """A section's (or a method part's) "does not apply" notice or reading, notes, then content."""
    parts = []
    if not_applicable:
        parts.append(f'<div class="na"><strong>Does not apply to this run:</strong> {esc(not_applicable)}</div>')
    elif reading:
        parts.append(f'<p class="reading">{esc(reading)}</p>')
    parts += [f'<p class="note">Note: {esc(n)}</p>' for n in notes]
    if not not_applicable:
        parts.append(content)
    return parts


def method_picker(methods: Sequence[str], current: str) -> str:
    """The navigation bar's method selector (``METHOD_JS`` acts on it)."""
    options = "".join(f'<option value="{esc(m)}"{" selected" if m == current else ""}>{esc(m)}</option>' for m in methods)
    return f'<label class="method-pick">Influence method <select id="method-select">{options}<option value="">all methods</option></select></label>'


def method_block(
    method: str, leaves_out: str, reading: str | None, content: str, not_applicable: str | None = None, notes: Sequence[str] = ()
) -> str:
    """One method's part of a section: its name and what it leaves out, then as ``section`` does."""
    head = f'<h3 class="method-name">{esc(method)} <span class="leaves">(leaves out: {esc(leaves_out)})</span></h3>'
    parts = [f'<div class="method-block" data-method="{esc(method)}">', head, *_body(reading, content, not_applicable, notes), "</div>"]
    return "\n".join(parts)


def figure(png: bytes | None, alt: str, caption: str = "") -> str:
    if png is None:
        return ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{png_img(png, alt)}{cap}</figure>"


def more(summary: str, content: str) -> str:
    return f'<details class="more"><summary>{esc(summary)}</summary>{content}</details>'


def columns_doc(columns: dict[str, str], file: str) -> str:
    rows = "".join(f"<tr><td class='text'><code>{esc(c)}</code></td><td class='text'>{esc(m)}</td></tr>" for c, m in columns.items())
    return more(
        f"Columns of analysis/{file}",
        f"<p class='note'>File: <code>../analysis/{esc(file)}</code></p><table><tbody>{rows}</tbody></table>",
    )


def browser(data: dict[str, Any]) -> str:
    return f"""
<div class="controls">
  <label>Language <select id="b-lang"><option value="">all languages</option></select></label>
  <label>Search <input id="b-q" type="search" placeholder="text or uid of a test example" autocomplete="off"></label>
  <label><input id="b-deep" type="checkbox"> also search the influential training texts</label>
  <span id="b-count"></span>
</div>
<noscript><p class="na">The example browser needs JavaScript; the same data is in ../analysis/topk.parquet and examples.parquet.</p></noscript>
<div id="b-list"></div>
<button id="b-more" type="button" hidden>Show more</button>
<script type="application/json" id="browser-data">{json_for_script(data)}</script>
<script>{BROWSER_JS}</script>
"""
