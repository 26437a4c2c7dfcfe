"""The report in a real browser: headless Chromium loads it with no JS or console errors and no network
use, the example browser works (filter, search, open a card), and a screenshot is taken. The checker
itself is shown to catch a deliberately broken page. Skipped when Chromium is not installed
(``apt-get install chromium``; ``.ci/run`` installs it)."""

from __future__ import annotations

import struct

import pandas as pd
import pytest

from lingtrace.pipeline import run_stages
from support.browser_check import check_page, find_chromium
from support.synthetic import make_synthetic_run

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="headless Chromium is not installed")

WIDTH, HEIGHT = 1280, 1400


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run, cfg = make_synthetic_run(tmp_path_factory.mktemp("browser") / "run", languages=("de", "es", "ru", "zh", "ko"), n_items=20, test_per_lang=3, epochs=3, k=8)
    # a text that would break a page that inserted data as markup
    train = pd.read_parquet(run.split_path("train"))
    train.loc[0, "text_a"] = "</script><img src=x onerror=alert(1)> " + train.loc[0, "text_a"]
    train.to_parquet(run.split_path("train"), index=False)
    run_stages(run, cfg, ["analyze", "report"])
    return run, cfg


def test_report_renders_without_errors_and_the_browser_works(report, tmp_path):
    run, cfg = report
    shot = tmp_path / "report.png"
    checks = {
        "cards": "document.querySelectorAll('#b-list details.card').length",
        "count": "document.getElementById('b-count').textContent",
        "images": "Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length",
        "broken_images": "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length",
        "opened_rows": """(() => {
            const card = document.querySelector('#b-list details.card');
            card.open = true;
            return new Promise(r => setTimeout(() => r(card.querySelectorAll('tbody tr').length), 50));
        })()""",
        "ru_only": """(() => {
            const s = document.getElementById('b-lang'); s.value = 'ru'; s.dispatchEvent(new Event('change'));
            return Array.from(document.querySelectorAll('#b-list details.card .lang')).map(e => e.textContent);
        })()""",
        "search": """(() => {
            const s = document.getElementById('b-lang'); s.value = ''; s.dispatchEvent(new Event('change'));
            const q = document.getElementById('b-q'); q.value = 'test-zh-'; q.dispatchEvent(new Event('input'));
            return document.querySelectorAll('#b-list details.card').length;
        })()""",
        "deep_search": """(() => {
            const q = document.getElementById('b-q'); q.value = 'onerror=alert';
            const d = document.getElementById('b-deep'); d.checked = true; d.dispatchEvent(new Event('change'));
            return document.querySelectorAll('#b-list details.card').length;
        })()""",
    }
    res = check_page(run.report_dir / "index.html", screenshot=shot, width=WIDTH, height=HEIGHT, evaluate=checks)
    assert res.errors == [] and res.network == [] and res.ready, res
    assert res.ok
    n_test = len(pd.read_parquet(run.selection_path))
    assert res.values["cards"] == n_test
    assert res.values["count"] == f"{n_test} of {n_test} test examples"
    assert res.values["images"] == len(list((run.report_dir / "figures").rglob("*.png"))) and res.values["broken_images"] == 0
    assert res.values["opened_rows"] == 2 * min(cfg.analysis.browser_k, cfg.analysis.k)
    assert res.values["ru_only"] == ["ru"] * 3
    assert res.values["search"] == 3
    assert res.values["deep_search"] >= 1  # some test example has the booby-trapped training text in its lists
    assert _png_size(shot) == (WIDTH, HEIGHT)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_the_checker_catches_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>half a page</p>"
        "<script>console.error('something failed'); document.body.dataset.ready = '1';</script>"
        "<script>undefinedFunction();</script></body></html>",
        encoding="utf-8",
    )
    res = check_page(page)
    assert not res.ok
    assert any("something failed" in e for e in res.errors)
    assert any("undefinedFunction" in e for e in res.errors)


def test_the_checker_catches_a_syntax_error_and_a_page_that_never_gets_ready(tmp_path):
    page = tmp_path / "syntax.html"
    page.write_text("<html><body><script>let x = ;</script></body></html>", encoding="utf-8")
    res = check_page(page)
    assert not res.ready and any("SyntaxError" in e for e in res.errors)


def test_the_checker_catches_network_use(tmp_path):
    page = tmp_path / "net.html"
    page.write_text(
        '<html><body><img src="https://example.invalid/logo.png"><script>document.body.dataset.ready = "1";</script></body></html>',
        encoding="utf-8",
    )
    res = check_page(page)
    assert res.network == ["https://example.invalid/logo.png"] and not res.ok


def test_a_report_of_several_methods_renders_and_the_method_selector_works(tmp_path_factory):
    run, cfg = make_synthetic_run(
        tmp_path_factory.mktemp("browser3") / "run", languages=("de", "fr", "ru"), n_items=16, test_per_lang=3, epochs=2, k=5,
        methods=("tracin", "adam-cosine", "representation"),
    )
    run_stages(run, cfg, ["analyze", "report"])
    visible = "Array.from(document.querySelectorAll('.method-block')).filter(b => !b.hidden).map(b => b.dataset.method)"
    first_row = "document.querySelector('#b-list details.card').querySelector('tbody tr').title"
    checks = {
        "blocks": "document.querySelectorAll('.method-block').length",
        "shown_first": f"[...new Set({visible})]",
        "first_row_tracin": f"""(() => {{
            const card = document.querySelector('#b-list details.card'); card.open = true;
            return new Promise(r => setTimeout(() => r({first_row}), 50));
        }})()""",
        "first_row_representation": f"""(() => {{
            const s = document.getElementById('method-select'); s.value = 'representation'; s.dispatchEvent(new Event('change'));
            const card = document.querySelector('#b-list details.card'); card.open = true;
            return new Promise(r => setTimeout(() => r({first_row}), 50));
        }})()""",
        "shown_representation": f"[...new Set({visible})]",
        "shown_all": f"""(() => {{
            const s = document.getElementById('method-select'); s.value = ''; s.dispatchEvent(new Event('change'));
            return [...new Set({visible})];
        }})()""",
    }
    res = check_page(run.report_dir / "index.html", evaluate=checks)
    assert res.ok, (res.errors, res.network, res.ready)
    assert res.values["blocks"] > 3 * 7
    assert res.values["shown_first"] == ["tracin"]
    assert res.values["shown_representation"] == ["representation"]
    assert res.values["shown_all"] == ["tracin", "adam-cosine", "representation"]
    first = pd.read_parquet(run.selection_path)["uid"].iloc[0]
    for method in ("tracin", "representation"):
        topk = pd.read_parquet(run.analysis_dir / method / "topk.parquet")
        top1 = topk[(topk["epoch"] == 0) & (topk["direction"] == "positive") & (topk["test_uid"] == first) & (topk["rank"] == 1)]
        assert res.values[f"first_row_{method}"] == top1["train_uid"].item(), method
