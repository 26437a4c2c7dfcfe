"""The ``report`` stage on synthetic run directories: a self-contained page with every section, figures,
readings computed from the numbers, the browser's data, and "does not apply" notices instead of zeros."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from lingtrace.analysis import tables as table_specs
from lingtrace.cli import main
from lingtrace.pipeline import run_stages
from lingtrace.report import readings
from lingtrace.report.html import fmt_number, json_for_script, table_html
from support.synthetic import make_synthetic_run

PNG = b"\x89PNG\r\n\x1a\n"


def _browser_json(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="browser-data">(.*?)</script>', page, re.S)
    assert m, "no browser data"
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    run, cfg = make_synthetic_run(tmp_path_factory.mktemp("rep") / "run", languages=("de", "fr", "ru", "zh", "ko"), n_items=20, test_per_lang=3, epochs=3, k=6)
    run_stages(run, cfg, ["analyze", "report"])
    return run, cfg


def test_report_is_one_self_contained_page_with_every_section(reported):
    run, cfg = reported
    path = run.report_dir / "index.html"
    page = path.read_text(encoding="utf-8")
    for sid in ["summary", *table_specs.TABLES.keys() - {"topk", "in_language_share", "dynamics_wilcoxon"}, "dynamics", "browser", "config"]:
        assert f'<section id="{sid}">' in page, sid
    # nothing to fetch: every src/href is inline data or an in-page anchor
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r for r in refs if not r.startswith(("data:", "#"))]
    assert "http://" not in page and "https://" not in page
    figures = sorted(str(p.relative_to(run.report_dir / "figures")) for p in (run.report_dir / "figures").rglob("*.png"))
    assert figures == sorted(
        ["dev_accuracy.png"]
        + [
            f"tracin/{n}.png"
            for n in [
            "language_shares",
            "average_influence",
            "translation_overlap",
            "in_language_dynamics",
            "shares_per_epoch",
            "wilcoxon",
            "score_distributions",
            "script_purity",
            "word_embedding_share",
            ]
        ]
    )
    for f in (run.report_dir / "figures").rglob("*.png"):
        assert f.read_bytes().startswith(PNG)
    assert page.count('src="data:image/png;base64,') == len(figures)
    assert "&quot;analysis&quot;: {" in page and "&quot;k&quot;: 6" in page  # the config section


def test_report_readings_are_computed_from_the_tables(reported):
    run, cfg = reported
    page = (run.report_dir / "index.html").read_text(encoding="utf-8")
    inl = pd.read_parquet(run.analysis_dir / "tracin" / "in_language_share.parquet")
    overall = inl[(inl["epoch"] == 0) & (inl["direction"] == "positive") & (inl["test_lang"] == "all")]["share"].item()
    sentence = readings.language_shares(inl, 6)
    assert f"On average {overall:.0f}% of a test example's 6 most positively influential" in sentence
    assert sentence.replace("'", "&#x27;") in page
    assert page.count('<p class="reading">') >= 8


def test_report_browser_data_covers_every_test_example(reported):
    run, cfg = reported
    data = _browser_json((run.report_dir / "index.html").read_text(encoding="utf-8"))
    selected = pd.read_parquet(run.selection_path)
    assert [t["uid"] for t in data["tests"]] == selected["uid"].tolist()
    assert data["languages"] == ["de", "fr", "ru", "zh", "ko"]
    assert data["methods"] == ["tracin"] and data["method"] == "tracin"
    first = data["tests"][0]
    lists = first["by_method"]["tracin"]
    assert len(lists["pos"]) == len(lists["neg"]) == min(cfg.analysis.browser_k, cfg.analysis.k)
    topk = pd.read_parquet(run.analysis_dir / "tracin" / "topk.parquet")
    top1 = topk[(topk["epoch"] == 0) & (topk["direction"] == "positive") & (topk["test_uid"] == first["uid"]) & (topk["rank"] == 1)].iloc[0]
    uid, score = lists["pos"][0]
    lang, text, label = data["train"][uid]
    train = pd.read_parquet(run.split_path("train")).set_index("uid")
    assert (uid, lang, text, score) == (top1["train_uid"], top1["train_lang"], train.loc[uid, "text_a"], pytest.approx(top1["score"]))
    assert label in {"smileys-emotion", "animals-nature", "food-drink", "travel-places", "objects"}


def test_report_shows_why_an_analysis_does_not_apply(tmp_path):
    run, cfg = make_synthetic_run(tmp_path / "run", n_items=12, test_per_lang=2, epochs=1, k=4, parallel=False, breakdown=False)
    run_stages(run, cfg, ["analyze", "report"])
    page = (run.report_dir / "index.html").read_text(encoding="utf-8")
    summary = json.loads((run.analysis_dir / "tracin" / table_specs.SUMMARY).read_text())
    for name, why in summary["not_applicable"].items():
        assert why.replace("'", "&#x27;") in page, name
    assert page.count("Does not apply to this run") == 3
    assert not (run.report_dir / "figures" / "tracin" / "translation_overlap.png").exists()
    assert not (run.report_dir / "figures" / "tracin" / "wilcoxon.png").exists()


def test_report_cli_and_missing_analysis_error(tmp_path, capsys):
    run, cfg = make_synthetic_run(tmp_path / "run", n_items=10, test_per_lang=2, epochs=2, k=3)
    assert main(["report", str(run.root), "-q"]) == 2
    err = capsys.readouterr().err
    assert "analyze" in err and err.count("\n") == 1
    assert main(["analyze", str(run.root), "-q"]) == 0
    assert main(["report", str(run.root), "-q"]) == 0
    assert (run.report_dir / "index.html").exists()


def test_texts_cannot_break_out_of_the_page(tmp_path):
    run, cfg = make_synthetic_run(tmp_path / "run", n_items=10, test_per_lang=2, epochs=2, k=3)
    evil = "</script><script>alert(1)</script><b>bold</b> & <!-- x"
    for path in (run.split_path("train"), run.selection_path):
        frame = pd.read_parquet(path)
        frame["text_a"] = evil + frame["text_a"]
        frame.to_parquet(path, index=False)
    run_stages(run, cfg, ["analyze", "report"])
    page = (run.report_dir / "index.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in page and "<b>bold</b>" not in page
    assert _browser_json(page)["tests"][0]["text"].startswith(evil)


def test_json_and_table_helpers_escape_and_format():
    assert "<" not in json_for_script({"a": "</script>"})
    assert json.loads(json_for_script({"a": "</script>"})) == {"a": "</script>"}
    html = table_html(pd.DataFrame({"lang": ["<i>de</i>"], "x": [0.123456], "n": [3]}), text_columns=("lang",))
    assert "&lt;i&gt;de&lt;/i&gt;" in html and ">0.1235<" in html and ">3<" in html
    assert fmt_number(float("nan")) == "–" and fmt_number(123456.7) == "123457"


# ---------------------------------------------------------------- several influence methods

METHODS = ("tracin", "adam-cosine", "representation")


@pytest.fixture(scope="module")
def three_methods(tmp_path_factory):
    run, cfg = make_synthetic_run(
        tmp_path_factory.mktemp("rep3") / "run", languages=("de", "fr", "ru"), n_items=16, test_per_lang=3, epochs=2, k=5, methods=METHODS
    )
    run_stages(run, cfg, ["analyze", "report"])
    return run, cfg


def test_report_shows_every_analysis_per_method_and_the_comparison(three_methods):
    from lingtrace.report.methods import KNOWN_LEAVES_OUT

    run, cfg = three_methods
    page = (run.report_dir / "index.html").read_text(encoding="utf-8")
    assert '<section id="methods"><h2>Do the conclusions depend on the method?' in page
    assert '<select id="method-select">' in page
    for sid in ("language_shares", "average_influence", "translation_overlap", "dynamics", "score_distributions", "script_purity", "examples"):
        part = page[page.index(f'<section id="{sid}">') :]
        part = part[: part.index("</section>")]
        assert [m for m in METHODS if f'data-method="{m}"' in part] == list(METHODS), sid
    # what each method leaves out, in the summary and on every method part
    for method in METHODS:
        assert esc_text(KNOWN_LEAVES_OUT[method]) in page
    # representation has one checkpoint: its dynamics do not apply, the others' do
    dyn = page[page.index('<section id="dynamics">') :]
    dyn = dyn[: dyn.index("</section>")]
    rep = dyn[dyn.index('data-method="representation"') :]
    assert "at least two" in rep and "Does not apply" not in dyn[: dyn.index('data-method="representation"')]
    # the readings of the comparison come from its tables
    from lingtrace.analysis.layout import read_layout

    layout, _ = read_layout(run.analysis_dir)
    tables = {n: pd.read_parquet(run.analysis_dir / "comparison" / table_specs.COMPARISON_TABLES[n].file) for n in layout["comparison"]["tables"]}
    findings = readings.method_findings(tables, list(METHODS), "tracin")
    assert len(findings) == 5
    for f in findings:
        assert esc_text(f.text) in page
    assert esc_text(readings.method_reading(findings, list(METHODS))) in page
    # figures per method and of the comparison
    names = {str(p.relative_to(run.report_dir / "figures")) for p in (run.report_dir / "figures").rglob("*.png")}
    assert {"comparison/methods_in_language_share.png", "comparison/methods_topk_overlap.png", "representation/language_shares.png"} <= names
    assert "representation/wilcoxon.png" not in names and "adam-cosine/wilcoxon.png" in names
    # the browser has every method's lists
    data = _browser_json(page)
    assert data["methods"] == list(METHODS) and data["method"] == "tracin"
    topk = pd.read_parquet(run.analysis_dir / "representation" / "topk.parquet")
    first = data["tests"][0]
    top1 = topk[(topk["epoch"] == 0) & (topk["direction"] == "positive") & (topk["test_uid"] == first["uid"]) & (topk["rank"] == 1)].iloc[0]
    assert first["by_method"]["representation"]["pos"][0] == [top1["train_uid"], pytest.approx(top1["score"])]


def esc_text(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_one_method_says_how_to_add_another(reported):
    run, cfg = reported
    page = (run.report_dir / "index.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="methods">') :]
    section = section[: section.index("</section>")]
    assert "Only one influence method (tracin) has scores in this run" in section
    assert "lingtrace influence RUN --method tracin,representation" in section
    assert '<select id="method-select">' not in page  # nothing to choose


def test_an_older_flat_analysis_still_reports_as_tracin(tmp_path):
    import shutil

    run, cfg = make_synthetic_run(tmp_path / "run", n_items=10, test_per_lang=2, epochs=2, k=3)
    run_stages(run, cfg, ["analyze"])
    # the layout of an older lingtrace: tracin's tables and summary in analysis/ itself
    (run.analysis_dir / "summary.json").unlink()
    shutil.rmtree(run.analysis_dir / "comparison")
    for p in (run.analysis_dir / "tracin").iterdir():
        shutil.move(p, run.analysis_dir / p.name)
    (run.analysis_dir / "tracin").rmdir()
    run_stages(run, cfg, ["report"])
    page = (run.report_dir / "index.html").read_text(encoding="utf-8")
    assert "made by an older lingtrace, for tracin only" in page and "lingtrace analyze RUN --overwrite" in page
    assert '<section id="language_shares">' in page and "../analysis/language_shares.parquet" in page


def test_a_newer_analysis_layout_is_refused_with_a_fix(tmp_path, capsys):
    run, cfg = make_synthetic_run(tmp_path / "run", n_items=10, test_per_lang=2, epochs=2, k=3)
    run_stages(run, cfg, ["analyze"])
    summary = json.loads((run.analysis_dir / table_specs.SUMMARY).read_text())
    (run.analysis_dir / table_specs.SUMMARY).write_text(json.dumps({**summary, "layout": 99}))
    assert main(["report", str(run.root), "-q"]) == 2
    err = capsys.readouterr().err
    assert "layout 99" in err and "--overwrite" in err and err.count("\n") == 1
