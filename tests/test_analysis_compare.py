"""The method comparison (``lingtrace.analysis.compare``) and its readings, against hand computations on
small fixed score matrices.

Six training examples: t0, t1 in de, t2, t3 in fr, t4, t5 in ru; translation ids 0, 1, 0, 1, 0, 1.
Two test examples: q0 in de, q1 in fr; k = 2. Method A's and B's scores below (C = A); worked out by
hand in the comments:

    A  q0: t0 .9  t2 .8  (positive top-2: de, fr)     q1: t1 .7  t4 .65 (de, ru)
    B  q0: t3 .9  t0 .7  (fr, de)                       q1: t2 .9  t3 .8  (fr, fr)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lingtrace.analysis import tables as table_specs
from lingtrace.analysis.common import ALL, NEGATIVE, POSITIVE, SUMMED, describe
from lingtrace.analysis.compare import (
    in_language_by_method,
    reinforcing_by_method,
    top_other_language,
    topk_overlap,
    topk_overlap_summary,
)
from lingtrace.analysis.overlap import translation_overlap
from lingtrace.analysis.shares import in_language_share, language_shares
from lingtrace.analysis.stage import compare_methods
from lingtrace.analysis.topk import topk_frame
from lingtrace.report import readings

LANGS = ["de", "fr", "ru"]
TRAIN = pd.DataFrame(
    {
        "uid": [f"t{i}" for i in range(6)],
        "lang": ["de", "de", "fr", "fr", "ru", "ru"],
        "translation_id": ["0", "1", "0", "1", "0", "1"],
        "text_a": ["x"] * 6,
        "text_b": [""] * 6,
        "label": [0] * 6,
    }
)
TEST = pd.DataFrame({"uid": ["q0", "q1"], "lang": ["de", "fr"], "translation_id": ["9", "8"], "text_a": ["y"] * 2, "text_b": [""] * 2, "label": [0, 0]})
A = np.array([[0.9, 0.1, 0.8, 0.2, 0.3, 0.0], [0.3, 0.7, 0.6, 0.5, 0.65, 0.1]])
B = np.array([[0.7, 0.6, 0.1, 0.9, 0.2, 0.3], [0.2, 0.1, 0.9, 0.8, 0.0, 0.4]])
CHANCE = 100 * 2 / 6


@pytest.fixture(scope="module")
def per_method():
    out = {}
    for name, scores in (("A", A), ("B", B), ("C", A.copy())):
        topk = topk_frame({SUMMED: scores}, TEST, TRAIN, 2)
        out[name] = {
            table_specs.TOPK.name: topk,
            table_specs.IN_LANGUAGE_SHARE.name: in_language_share(topk, TRAIN["lang"], LANGS),
            table_specs.LANGUAGE_SHARES.name: language_shares(topk, TRAIN["lang"], LANGS),
            table_specs.TRANSLATION_OVERLAP.name: translation_overlap(topk, TRAIN, True, LANGS),
        }
    return out


def _tables(per_method, name):
    return {m: t[name] for m, t in per_method.items()}


def _row(frame, **where):
    sel = frame
    for col, value in where.items():
        sel = sel[sel[col] == value]
    assert len(sel) == 1, (where, sel)
    return sel.iloc[0]


def test_in_language_share_side_by_side(per_method):
    table = in_language_by_method(_tables(per_method, table_specs.IN_LANGUAGE_SHARE.name))
    assert list(table.columns) == list(table_specs.METHODS_IN_LANGUAGE_SHARE.columns)
    expected = {  # % of the positive top-2 in the test example's own language
        ("A", "de"): 50.0,  # q0: t0 de, t2 fr
        ("A", "fr"): 0.0,  # q1: t1 de, t4 ru
        ("A", ALL): 25.0,
        ("B", "de"): 50.0,  # q0: t3 fr, t0 de
        ("B", "fr"): 100.0,  # q1: t2 fr, t3 fr
        ("B", ALL): 75.0,
    }
    for (method, lang), share in expected.items():
        row = _row(table, method=method, direction=POSITIVE, test_lang=lang)
        assert row["share"] == pytest.approx(share) and row["train_fraction"] == pytest.approx(CHANCE)
    assert table["method"].drop_duplicates().tolist() == ["A", "B", "C"]


def test_top_other_language_with_runner_up_and_ties(per_method):
    table = top_other_language(_tables(per_method, table_specs.LANGUAGE_SHARES.name), LANGS)
    assert list(table.columns) == list(table_specs.METHODS_TOP_OTHER_LANGUAGE.columns)
    # A, de test: fr 50 %, ru 0 %
    row = _row(table, method="A", direction=POSITIVE, test_lang="de")
    assert (row["train_lang"], row["share"], row["runner_up_lang"], row["runner_up_share"]) == ("fr", 50.0, "ru", 0.0)
    # A, fr test: de 50 % and ru 50 % tie: de comes first in the language order
    row = _row(table, method="A", direction=POSITIVE, test_lang="fr")
    assert (row["train_lang"], row["share"], row["runner_up_lang"], row["runner_up_share"]) == ("de", 50.0, "ru", 50.0)
    # B, fr test: every entry in fr, so de 0 % and ru 0 % tie
    row = _row(table, method="B", direction=POSITIVE, test_lang="fr")
    assert (row["train_lang"], row["share"], row["runner_up_lang"]) == ("de", 0.0, "ru")


def test_reinforcing_share_side_by_side(per_method):
    table = reinforcing_by_method(_tables(per_method, table_specs.TRANSLATION_OVERLAP.name))
    assert list(table.columns) == list(table_specs.METHODS_REINFORCING_SHARE.columns)
    # A: q0's in-language t0 (id 0) has its translation t2 (fr) among the cross-lingual top-k: 1 of 1;
    # chance: 1 of the 2 fr examples has id 0. q1 has no in-language entry: t1, t4 are 0 of 2, chance 0.
    row = _row(table, method="A", direction=POSITIVE, test_lang="de")
    assert (row["n_cross"], row["pct_translations"], row["pct_by_chance"]) == (1, 100.0, 50.0)
    row = _row(table, method="A", direction=POSITIVE, test_lang="fr")
    assert (row["n_cross"], row["pct_translations"], row["pct_by_chance"]) == (2, 0.0, 0.0)
    row = _row(table, method="A", direction=POSITIVE, test_lang=ALL)
    assert row["n_cross"] == 3 and row["pct_translations"] == pytest.approx(100 / 3) and row["pct_by_chance"] == pytest.approx(50 / 3)
    # B: q0's in-language t0 (id 0), cross-lingual t3 (id 1): not a translation; q1 has no cross-lingual entry
    row = _row(table, method="B", direction=POSITIVE, test_lang=ALL)
    assert (row["n_cross"], row["pct_translations"], row["pct_by_chance"]) == (1, 0.0, 50.0)
    assert math.isnan(_row(table, method="B", direction=POSITIVE, test_lang="fr")["pct_translations"])


def test_topk_overlap_per_example_and_its_distribution(per_method):
    per_example = topk_overlap(_tables(per_method, table_specs.TOPK.name))
    assert list(per_example.columns) == list(table_specs.METHODS_TOPK_OVERLAP.columns)
    assert per_example[["method_a", "method_b"]].drop_duplicates().values.tolist() == [["A", "B"], ["A", "C"], ["B", "C"]]
    # positive: q0 A {t0, t2} vs B {t3, t0}: 1 common; q1 A {t1, t4} vs B {t2, t3}: none
    ab = per_example[(per_example["method_a"] == "A") & (per_example["method_b"] == "B") & (per_example["direction"] == POSITIVE)]
    assert dict(zip(ab["test_uid"], ab["n_common"])) == {"q0": 1, "q1": 0}
    assert dict(zip(ab["test_uid"], ab["overlap"])) == {"q0": 50.0, "q1": 0.0}
    # negative: q0 A {t5, t1} vs B {t2, t4}; q1 A {t5, t0} vs B {t4, t1}: none
    ab_neg = per_example[(per_example["method_a"] == "A") & (per_example["method_b"] == "B") & (per_example["direction"] == NEGATIVE)]
    assert ab_neg["n_common"].tolist() == [0, 0]
    assert (per_example[per_example["method_b"] == "C"].query("method_a == 'A'")["overlap"] == 100.0).all()

    summary = topk_overlap_summary(per_example, n_train=6, languages=LANGS)
    assert list(summary.columns) == list(table_specs.METHODS_TOPK_OVERLAP_SUMMARY.columns)
    row = _row(summary, method_a="A", method_b="B", direction=POSITIVE, test_lang=ALL)
    # overlaps 50 and 0: mean 25, population std 25, quartiles by linear interpolation 12.5 / 25 / 37.5
    assert (row["n_test"], row["mean"], row["std"], row["min"], row["q25"], row["median"], row["q75"], row["max"]) == (
        2, 25.0, 25.0, 0.0, 12.5, 25.0, 37.5, 50.0,
    )
    assert row["pct_by_chance"] == pytest.approx(CHANCE)  # two random top-2 sets of 6 share 2 * 2/6 examples
    assert _row(summary, method_a="A", method_b="B", direction=POSITIVE, test_lang="de")["mean"] == 50.0


def test_describe_is_numpy():
    v = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    d = describe(v)
    assert d["mean"] == pytest.approx(2.8) and d["std"] == pytest.approx(np.std(v)) and d["median"] == 3.0
    assert (d["min"], d["max"], d["q25"], d["q75"]) == (1.0, 5.0, 1.0, 4.0)


def test_compare_methods_without_a_second_method_or_a_parallel_task(per_method):
    one = {"A": {k: v for k, v in per_method["A"].items() if k != table_specs.TRANSLATION_OVERLAP.name}}
    res = compare_methods(one, n_train=6, parallel=False, languages=LANGS)
    assert set(res.tables) == {table_specs.METHODS_IN_LANGUAGE_SHARE.name, table_specs.METHODS_TOP_OTHER_LANGUAGE.name}
    assert "only one influence method (A)" in res.not_applicable[table_specs.METHODS_TOPK_OVERLAP.name]
    assert "not parallel" in res.not_applicable[table_specs.METHODS_REINFORCING_SHARE.name]


def test_findings_say_which_conclusions_hold_under_every_method(per_method):
    res = compare_methods(per_method, n_train=6, parallel=True, languages=LANGS)
    findings = readings.method_findings(res.tables, ["A", "B", "C"], "A")
    above, highest, other, reinforcing, overlap = findings
    # one test example per language: no t-test against chance, every language "cannot be told from chance"
    assert above.holds is True and "0 of 2 test languages" in above.text and "de, fr cannot be told from chance" in above.text
    # highest in-language share: de under A (and C), fr under B
    assert highest.holds is False and "is de under A" in highest.text and "fr under B" in highest.text
    # de -> fr under every method; fr -> de under A and C, a de/ru tie under B (de counts)
    assert other.holds is True and "de → fr" in other.text and "fr → de" in other.text
    # A: 33 % translations, more than the 17 % chance: complement; B: 0 %, not more than its 50 % chance
    assert reinforcing.holds is False and "mostly complement" in reinforcing.text and "under B they" in reinforcing.text
    assert overlap.holds is None and "from 25% (A vs B)" in overlap.text and "to 100% (A vs C)" in overlap.text
    assert readings.method_reading(findings, ["A", "B", "C"]) == (
        "2 of the 4 conclusions checked below hold under all 3 methods (A, B, C); 2 depend on the method."
    )
    same = readings.method_findings(compare_methods({"A": per_method["A"], "C": per_method["C"]}, 6, True, LANGS).tables, ["A", "C"], "A")
    assert all(f.holds in (True, None) for f in same)
    assert readings.method_reading(same, ["A", "C"]) == "Every one of the 4 conclusions checked below holds under both methods (A, C)."


def test_the_test_against_chance_is_scipys_one_sample_t_test():
    from scipy import stats

    from lingtrace.analysis.compare import versus_chance

    for values, chance in (([50.0, 100.0, 0.0, 50.0], 100 / 3), ([10.0, 20.0, 30.0], 5.0), ([40.0, 42.0, 38.0, 41.0, 39.5], 40.0)):
        v = np.array(values)
        expected = stats.ttest_1samp(v, chance).pvalue
        assert versus_chance([v.mean()], [v.std()], [len(v)], [chance])[0] == pytest.approx(expected, rel=1e-12)
    assert np.isnan(versus_chance([50.0, 50.0], [0.0, 10.0], [3, 1], [20.0, 20.0])).all()  # no spread; one value


def test_in_language_findings_use_the_test_against_chance():
    inl = pd.DataFrame(
        [
            # method, test_lang, share, p_vs_chance; chance 20 %
            ("R", "de", 60.0, 0.001),
            ("R", "fr", 25.0, 0.5),
            ("R", "ru", 5.0, 0.02),
            ("M", "de", 55.0, 0.001),
            ("M", "fr", 40.0, 0.01),
            ("M", "ru", 10.0, 0.03),
            ("N", "de", 30.0, 0.2),
            ("N", "fr", 22.0, 0.7),
            ("N", "ru", 8.0, 0.04),
        ],
        columns=["method", "test_lang", "share", "p_vs_chance"],
    ).assign(direction=POSITIVE, train_fraction=20.0)
    above, highest = readings.in_language_findings(inl, ["R", "M", "N"], "R")
    assert above.holds is False
    assert above.text.startswith("Under R, 1 of 3 test languages draws more of their positively influential examples from their own language than chance would (de;")
    assert "fr cannot be told from chance; ru below chance" in above.text
    assert "M puts fr above chance (40% vs 20%, p = 0.01)" in above.text and "N puts de at chance (30% vs 20%, p = 0.2)" in above.text
    assert "ru" not in above.text.split("but")[1]  # ru is below chance under every method
    assert highest.holds is True and "is de under R; so under every method" in highest.text
