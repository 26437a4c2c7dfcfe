"""Every analysis against a hand-computed tiny case (6 training examples, 3 test examples, known scores).

The tiny world: training examples in de, fr, ru, two translation groups t0/t1 (a0, b0, c0 are
translations of each other, so are a1, b1, c1); test examples x1, x2 (de) and y (fr); k = 2.

    summed scores   a0(de,t0) a1(de,t1) b0(fr,t0) b1(fr,t1) c0(ru,t0) c1(ru,t1)
    x1 (de)            0.9       0.1       0.8      -0.5       0.2      -0.9
    x2 (de)            0.3       0.7      -0.2       0.1      -0.8       0.6
    y  (fr)            0.5      -0.6       0.4       0.9      -0.1       0.0

top-2 positive: x1 -> a0, b0; x2 -> a1, c1; y -> b1, a0
top-2 negative: x1 -> c1, b1; x2 -> c0, b0; y -> a1, c0
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lingtrace.analysis.average import average_influence
from lingtrace.analysis.common import ALL, NEGATIVE, POSITIVE, SUMMED, NotApplicable, SummedMatrix
from lingtrace.analysis.distributions import score_distributions
from lingtrace.analysis.dynamics import (
    IN_LANGUAGE_SHARE,
    MEAN_RANK_OF_TOP_K,
    average_ranks,
    epoch_wilcoxon,
    top_k_mean_ranks,
    wilcoxon,
)
from lingtrace.analysis.embeddings import word_embedding_share
from lingtrace.analysis.examples import example_table
from lingtrace.analysis.overlap import translation_overlap
from lingtrace.analysis.scripts import char_script, expected_scripts, is_pure, script_purity
from lingtrace.analysis.shares import in_language_share, language_shares, per_example_in_language_share
from lingtrace.analysis.tables import TABLES
from lingtrace.analysis.topk import topk_frame
from lingtrace.influence.store import load_scores, write_axes, write_epoch
from lingtrace.io import write_json

SCORES = np.array(
    [
        [0.9, 0.1, 0.8, -0.5, 0.2, -0.9],
        [0.3, 0.7, -0.2, 0.1, -0.8, 0.6],
        [0.5, -0.6, 0.4, 0.9, -0.1, 0.0],
    ]
)
# two checkpoints that sum to SCORES (epoch 2 moves weight towards other languages)
DELTA = np.array(
    [
        [0.1, 0.0, -0.3, 0.0, 0.2, 0.0],
        [0.1, 0.25, 0.0, -0.1, 0.0, -0.2],
        [0.1, 0.1, -0.2, -0.3, 0.0, 0.0],
    ]
)
EPOCH1 = SCORES / 2 + DELTA
EPOCH2 = SCORES / 2 - DELTA
LABELS = ["animal", "vehicle"]


def tiny_train() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "uid": ["a0", "a1", "b0", "b1", "c0", "c1"],
            "lang": ["de", "de", "fr", "fr", "ru", "ru"],
            "translation_id": ["t0", "t1", "t0", "t1", "t0", "t1"],
            "text_a": ["Hund", "Auto 2", "chien", "voiture", "собака", "машина car"],
            "text_b": ["", "", "", "", "", ""],
            "label": [0, 1, 0, 1, 0, 1],
        }
    )


def tiny_test() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "uid": ["x1", "x2", "y"],
            "lang": ["de", "de", "fr"],
            "translation_id": ["s0", "s1", "s2"],
            "text_a": ["Katze", "Bus", "camion"],
            "text_b": ["", "", ""],
            "label": [0, 1, 1],
        }
    )


def tiny_topk(k: int = 2) -> pd.DataFrame:
    return topk_frame({SUMMED: SCORES, 1: EPOCH1, 2: EPOCH2}, tiny_test(), tiny_train(), k)


def _row(frame: pd.DataFrame, **where) -> pd.Series:
    sel = frame
    for key, value in where.items():
        sel = sel[sel[key] == value]
    assert len(sel) == 1, (where, sel)
    return sel.iloc[0]


# ---------------------------------------------------------------- top-k


def test_topk_frame_lists_the_hand_computed_top_k_with_documented_columns():
    topk = tiny_topk()
    assert list(topk.columns) == list(TABLES["topk"].columns)
    summed = topk[topk["epoch"] == SUMMED]
    got = {
        (d, t): list(g.sort_values("rank")["train_uid"])
        for (d, t), g in summed.groupby(["direction", "test_uid"])
    }
    assert got == {
        (POSITIVE, "x1"): ["a0", "b0"],
        (POSITIVE, "x2"): ["a1", "c1"],
        (POSITIVE, "y"): ["b1", "a0"],
        (NEGATIVE, "x1"): ["c1", "b1"],
        (NEGATIVE, "x2"): ["c0", "b0"],
        (NEGATIVE, "y"): ["a1", "c0"],
    }
    assert _row(summed, direction=POSITIVE, test_uid="y", rank=1)["score"] == pytest.approx(0.9)
    assert _row(summed, direction=POSITIVE, test_uid="y", rank=1)["train_translation_id"] == "t1"
    # one block per row and the default block size give the same table
    one_row_blocks = topk_frame({SUMMED: SCORES}, tiny_test(), tiny_train(), 2, block_rows=1)
    pd.testing.assert_frame_equal(one_row_blocks, summed.reset_index(drop=True))
    assert sorted(topk["epoch"].unique()) == [0, 1, 2]


def test_topk_frame_caps_k_and_breaks_ties_by_training_order():
    ties = np.array([[0.5, 0.5, 0.1, 0.5, 0.5, 0.1]])
    test = tiny_test().iloc[:1]
    frame = topk_frame({SUMMED: ties}, test, tiny_train(), k=3, directions=(POSITIVE,))
    assert list(frame["train_uid"]) == ["a0", "a1", "b1"]
    frame = topk_frame({SUMMED: ties}, test, tiny_train(), k=50, directions=(NEGATIVE,))
    assert list(frame["train_uid"]) == ["b0", "c1", "a0", "a1", "b1", "c0"]


def test_summed_matrix_reads_row_blocks_of_the_sum():
    m = SummedMatrix([EPOCH1, EPOCH2])
    assert m.shape == SCORES.shape
    np.testing.assert_allclose(m[1:3], SCORES[1:3])
    with pytest.raises(ValueError):
        SummedMatrix([EPOCH1, EPOCH1[:2]])


# ---------------------------------------------------------------- language shares (Fig. 2)


def test_language_shares_hand_computed():
    shares = language_shares(tiny_topk(), tiny_train()["lang"], ["de", "fr", "ru"])
    assert list(shares.columns) == list(TABLES["language_shares"].columns)
    s = shares[(shares["epoch"] == SUMMED) & (shares["direction"] == POSITIVE)]
    # de test: x1 = {de 50, fr 50}, x2 = {de 50, ru 50}
    assert _row(s, test_lang="de", train_lang="de")["share"] == pytest.approx(50.0)
    assert _row(s, test_lang="de", train_lang="fr")["share"] == pytest.approx(25.0)
    assert _row(s, test_lang="de", train_lang="fr")["share_std"] == pytest.approx(25.0)
    assert _row(s, test_lang="de", train_lang="ru")["share"] == pytest.approx(25.0)
    assert _row(s, test_lang="de", train_lang="ru")["n_test"] == 2
    # fr test: y = {fr 50, de 50}; ru is absent from its top-k but still gets a 0 row
    assert _row(s, test_lang="fr", train_lang="ru")["share"] == 0.0
    assert _row(s, test_lang="fr", train_lang="de")["share"] == pytest.approx(50.0)
    assert _row(s, test_lang="fr", train_lang="de")["train_fraction"] == pytest.approx(100 / 3)
    n = shares[(shares["epoch"] == SUMMED) & (shares["direction"] == NEGATIVE)]
    assert _row(n, test_lang="de", train_lang="de")["share"] == 0.0
    assert _row(n, test_lang="de", train_lang="ru")["share"] == pytest.approx(50.0)
    # every (epoch, direction, test language) sums to 100 %
    sums = shares.groupby(["epoch", "direction", "test_lang"])["share"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 100.0)
    assert len(shares) == 3 * 2 * 2 * 3


def test_in_language_share_hand_computed():
    inl = in_language_share(tiny_topk(), tiny_train()["lang"], ["de", "fr", "ru"])
    assert list(inl.columns) == list(TABLES["in_language_share"].columns)
    s = inl[inl["epoch"] == SUMMED]
    assert _row(s, direction=POSITIVE, test_lang="de")["share"] == pytest.approx(50.0)
    assert _row(s, direction=POSITIVE, test_lang="fr")["share"] == pytest.approx(50.0)
    assert _row(s, direction=POSITIVE, test_lang=ALL)["share"] == pytest.approx(50.0)
    assert _row(s, direction=POSITIVE, test_lang=ALL)["n_test"] == 3
    assert _row(s, direction=NEGATIVE, test_lang=ALL)["share"] == 0.0
    assert _row(s, direction=POSITIVE, test_lang=ALL)["train_fraction"] == pytest.approx(100 / 3)
    # epoch 1 = SCORES / 2 + DELTA: x1 -> a0, c0 (de 50 %), x2 -> a1, a0 (100 %), y -> a0, b1 (fr 50 %)
    # epoch 2 = SCORES / 2 - DELTA: x1 -> b0, a0 (50 %), x2 -> c1, b1 (0 %), y -> b1, b0 (100 %)
    e1 = inl[(inl["epoch"] == 1) & (inl["direction"] == POSITIVE)]
    e2 = inl[(inl["epoch"] == 2) & (inl["direction"] == POSITIVE)]
    assert _row(e1, test_lang="de")["share"] == pytest.approx(75.0)
    assert _row(e1, test_lang="fr")["share"] == pytest.approx(50.0)
    assert _row(e2, test_lang="de")["share"] == pytest.approx(25.0)
    assert _row(e2, test_lang="fr")["share"] == pytest.approx(100.0)
    assert _row(e2, test_lang=ALL)["share"] == pytest.approx(50.0)


# ---------------------------------------------------------------- average influence (Tables 3, 6)


def test_average_influence_hand_computed():
    avg = average_influence(SCORES, tiny_test()["lang"], tiny_train()["lang"], ["de", "fr", "ru"], block_rows=2)
    assert list(avg.columns) == ["test_lang", "train_lang", "mean_score", "std_score", "n_pairs"]
    expected = {
        ("de", "de"): 0.5,  # (0.9 + 0.1 + 0.3 + 0.7) / 4
        ("de", "fr"): 0.05,  # (0.8 - 0.5 - 0.2 + 0.1) / 4
        ("de", "ru"): -0.225,  # (0.2 - 0.9 - 0.8 + 0.6) / 4
        ("fr", "de"): -0.05,
        ("fr", "fr"): 0.65,
        ("fr", "ru"): -0.05,
    }
    for (te, tr), mean in expected.items():
        assert _row(avg, test_lang=te, train_lang=tr)["mean_score"] == pytest.approx(mean)
    assert _row(avg, test_lang="fr", train_lang="fr")["std_score"] == pytest.approx(0.25)
    assert _row(avg, test_lang="de", train_lang="ru")["n_pairs"] == 4
    assert _row(avg, test_lang="fr", train_lang="ru")["n_pairs"] == 2


# ---------------------------------------------------------------- reinforcing vs complementary (Table 4)


def test_translation_overlap_hand_computed():
    ov = translation_overlap(tiny_topk(), tiny_train(), parallel=True, languages=["de", "fr", "ru"])
    assert list(ov.columns) == list(TABLES["translation_overlap"].columns)
    pos = ov[ov["direction"] == POSITIVE]
    # x1: in-language a0 (t0); cross b0 (fr, t0) is a translation. x2: a1 (t1); c1 (ru, t1) is one.
    r = _row(pos, test_lang="de", train_lang="fr")
    assert (r["n_cross"], r["n_translations"], r["pct_translations"]) == (1, 1, 100.0)
    assert r["pct_by_chance"] == pytest.approx(50.0)  # 1 of the 2 fr examples carries t0
    assert _row(pos, test_lang="de", train_lang=ALL)["pct_translations"] == 100.0
    # y: in-language b1 (t1); cross a0 (de, t0) is not a translation; no ru entry -> empty, not 0
    assert _row(pos, test_lang="fr", train_lang="de")["pct_translations"] == 0.0
    r = _row(pos, test_lang="fr", train_lang="ru")
    assert r["n_cross"] == 0 and np.isnan(r["pct_translations"])
    r = _row(pos, test_lang=ALL, train_lang=ALL)
    assert (r["n_test"], r["n_cross"], r["n_translations"]) == (3, 3, 2)
    assert r["pct_translations"] == pytest.approx(200 / 3)
    assert r["n_test_without_in_language"] == 0


def test_translation_overlap_without_in_language_examples_counts_them_as_complementary():
    ov = translation_overlap(tiny_topk(), tiny_train(), parallel=True, languages=["de", "fr", "ru"])
    neg = ov[ov["direction"] == NEGATIVE]
    # no test example has an in-language example among its negative top-2
    r = _row(neg, test_lang="de", train_lang=ALL)
    assert (r["n_cross"], r["n_translations"], r["n_test_without_in_language"]) == (4, 0, 2)
    assert r["pct_translations"] == 0.0 and r["pct_by_chance"] == 0.0
    assert _row(neg, test_lang=ALL, train_lang=ALL)["n_test_without_in_language"] == 3


def test_translation_overlap_does_not_apply_to_non_parallel_data():
    with pytest.raises(NotApplicable, match="not a parallel task"):
        translation_overlap(tiny_topk(), tiny_train(), parallel=False, task="task 'marc'")
    unlinked = tiny_train().assign(translation_id=lambda f: f["uid"])
    with pytest.raises(NotApplicable, match="no translation_id is shared"):
        translation_overlap(tiny_topk(), unlinked, parallel=True)
    one_lang = tiny_train().assign(lang="de")
    with pytest.raises(NotApplicable, match="only one training language"):
        translation_overlap(tiny_topk(), one_lang, parallel=True)


def test_translation_overlap_leaves_out_zero_shot_test_languages_with_a_note():
    test = tiny_test().assign(lang=["de", "de", "es"])
    topk = topk_frame({SUMMED: SCORES}, test, tiny_train(), 2)
    ov = translation_overlap(topk, tiny_train(), parallel=True)
    assert "es" not in set(ov["test_lang"])
    assert any("es" in n and "zero-shot" in n for n in ov.attrs["notes"])


# ---------------------------------------------------------------- dynamics (Fig. 3) and Wilcoxon


def test_wilcoxon_is_scipy_and_handles_identical_samples():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=15), rng.normal(size=15) + 0.4
    ref = stats.wilcoxon(a, b)
    assert wilcoxon(a, b) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    assert wilcoxon([1.0, 2.0], [1.0, 2.0]) == (0.0, 1.0)
    stat, p = wilcoxon([], [])
    assert np.isnan(stat) and np.isnan(p)


def test_average_ranks_equal_scipy_rankdata_with_ties():
    rng = np.random.default_rng(0)
    row = rng.integers(0, 6, size=40).astype(float)
    pick = np.array([0, 5, 17, 39])
    np.testing.assert_allclose(average_ranks(row, row[pick], largest=True), stats.rankdata(-row)[pick])
    np.testing.assert_allclose(average_ranks(row, row[pick], largest=False), stats.rankdata(row)[pick])
    # hand case: [3, 1, 2, 2]: 3 is first, the two 2s share ranks 2 and 3
    assert list(average_ranks(np.array([3.0, 1, 2, 2]), np.array([3.0, 2.0]), largest=True)) == [1.0, 2.5]


def test_epoch_wilcoxon_equals_scipy_called_directly():
    rng = np.random.default_rng(7)
    n_test, n_train, k = 12, 30, 5
    train = pd.DataFrame(
        {
            "uid": [f"r{i}" for i in range(n_train)],
            "lang": [["de", "fr", "ru"][i % 3] for i in range(n_train)],
            "translation_id": [str(i // 3) for i in range(n_train)],
            "text_a": ["t"] * n_train,
            "text_b": [""] * n_train,
            "label": [0] * n_train,
        }
    )
    test = pd.DataFrame(
        {
            "uid": [f"q{i}" for i in range(n_test)],
            "lang": [["de", "fr"][i % 2] for i in range(n_test)],
            "translation_id": [f"s{i}" for i in range(n_test)],
            "text_a": ["t"] * n_test,
            "text_b": [""] * n_test,
            "label": [0] * n_test,
        }
    )
    epochs = {e: rng.normal(size=(n_test, n_train)) + 0.3 * e * (test["lang"].to_numpy()[:, None] == train["lang"].to_numpy()[None, :]) for e in (1, 2, 3)}
    summed = sum(epochs.values())
    topk = topk_frame({SUMMED: summed, **epochs}, test, train, k)

    shares = per_example_in_language_share(topk)
    table = epoch_wilcoxon(shares, IN_LANGUAGE_SHARE, ["de", "fr"])
    assert list(table.columns) == list(TABLES["dynamics_wilcoxon"].columns)
    assert len(table) == 2 * 3 * 3  # directions x (de, fr, all) x epoch pairs

    def own_share(m, largest):
        order = np.argsort(-m if largest else m, axis=1, kind="stable")[:, :k]
        return np.array([(train["lang"].to_numpy()[order[i]] == test["lang"][i]).mean() * 100 for i in range(n_test)])

    for ea, eb in [(1, 2), (1, 3), (2, 3)]:
        a, b = own_share(epochs[ea], True), own_share(epochs[eb], True)
        ref = stats.wilcoxon(a, b)
        r = _row(table, direction=POSITIVE, test_lang=ALL, epoch_a=ea, epoch_b=eb)
        assert r["statistic"] == pytest.approx(ref.statistic)
        assert r["p_value"] == pytest.approx(ref.pvalue)
        assert (r["n"], r["mean_a"], r["mean_b"]) == (n_test, pytest.approx(a.mean()), pytest.approx(b.mean()))
        fr = test["lang"].to_numpy() == "fr"
        ref_fr = stats.wilcoxon(a[fr], b[fr])
        assert _row(table, direction=POSITIVE, test_lang="fr", epoch_a=ea, epoch_b=eb)["p_value"] == pytest.approx(ref_fr.pvalue)

    ranks = top_k_mean_ranks(epochs, topk, test["uid"].tolist(), train["uid"].tolist(), block_rows=5)
    rtab = epoch_wilcoxon(ranks, MEAN_RANK_OF_TOP_K)
    ref_sets = np.argsort(-summed, axis=1, kind="stable")[:, :k]

    def mean_rank(m):
        return np.array([stats.rankdata(-m[i])[ref_sets[i]].mean() for i in range(n_test)])

    ref = stats.wilcoxon(mean_rank(epochs[1]), mean_rank(epochs[3]))
    r = _row(rtab, direction=POSITIVE, test_lang=ALL, epoch_a=1, epoch_b=3)
    assert r["measure"] == MEAN_RANK_OF_TOP_K
    assert r["p_value"] == pytest.approx(ref.pvalue)
    assert r["mean_a"] == pytest.approx(mean_rank(epochs[1]).mean())


def test_epoch_wilcoxon_needs_two_checkpoints():
    topk = topk_frame({SUMMED: SCORES, 1: SCORES}, tiny_test(), tiny_train(), 2)
    with pytest.raises(NotApplicable, match="at least two"):
        epoch_wilcoxon(per_example_in_language_share(topk), IN_LANGUAGE_SHARE)


# ---------------------------------------------------------------- score distributions (Figs. 9-11)


def test_score_distributions_hand_computed():
    dist = score_distributions(tiny_topk(), ["de", "fr", "ru"])
    assert list(dist.columns) == list(TABLES["score_distributions"].columns)
    r = _row(dist, direction=POSITIVE, test_lang="de", train_lang="de")  # a0 0.9 (x1), a1 0.7 (x2)
    assert r["n"] == 2
    assert (r["mean"], r["std"], r["min"], r["median"], r["max"]) == tuple(pytest.approx(v) for v in (0.8, 0.1, 0.7, 0.8, 0.9))
    r = _row(dist, direction=NEGATIVE, test_lang="de", train_lang="fr")  # b1 -0.5 (x1), b0 -0.2 (x2)
    assert (r["n"], r["mean"]) == (2, pytest.approx(-0.35))
    assert len(dist[(dist["direction"] == POSITIVE) & (dist["test_lang"] == "fr")]) == 2  # fr and de only


# ---------------------------------------------------------------- example tables (Tables 1, 2, 5)


def test_example_table_for_one_test_example():
    ex = example_table(tiny_topk(), tiny_test(), tiny_train(), LABELS, n=1, test_uids=["x1"])
    assert list(ex.columns) == list(TABLES["examples"].columns)
    assert len(ex) == 2
    pos, neg = ex.iloc[0], ex.iloc[1]
    assert (pos["direction"], pos["train_uid"], pos["train_text"], pos["train_lang"], pos["train_label_name"]) == (
        POSITIVE,
        "a0",
        "Hund",
        "de",
        "animal",
    )
    assert pos["score"] == pytest.approx(0.9)
    assert (neg["direction"], neg["train_text"], neg["train_label_name"], neg["score"]) == (NEGATIVE, "машина car", "vehicle", pytest.approx(-0.9))
    assert (pos["test_text"], pos["test_label_name"]) == ("Katze", "animal")
    every = example_table(tiny_topk(), tiny_test(), tiny_train(), LABELS, n=2)
    assert len(every) == 3 * 2 * 2 and list(every["test_uid"].unique()) == ["x1", "x2", "y"]
    with pytest.raises(KeyError):
        example_table(tiny_topk(), tiny_test(), tiny_train(), LABELS, test_uids=["nope"])


def test_example_text_joins_sentence_pairs():
    train = tiny_train()
    train.loc[0, "text_b"] = "bellt"
    ex = example_table(tiny_topk(), tiny_test(), train, LABELS, n=1, test_uids=["x1"])
    assert ex.iloc[0]["train_text"] == "Hund [SEP] bellt"


# ---------------------------------------------------------------- scripts


@pytest.mark.parametrize(
    ("ch", "script"),
    [
        ("a", "Latin"),
        ("é", "Latin"),
        ("Ａ", "Latin"),
        ("я", "Cyrillic"),
        ("中", "Han"),
        ("々", "Han"),
        ("한", "Hangul"),
        ("ㄱ", "Hangul"),
        ("ひ", "Hiragana"),
        ("カ", "Katakana"),
        ("ｶ", "Katakana"),
        ("ー", "Katakana"),
        ("ا", "Arabic"),
        ("ह", "Devanagari"),
        ("ि", "Devanagari"),
        ("α", "Greek"),
        ("ก", "Thai"),
        ("5", None),
        ("１", None),
        ("!", None),
        (" ", None),
        ("😀", None),
        ("\u0301", None),
    ],
)
def test_char_script(ch, script):
    assert char_script(ch) == script


def test_expected_scripts_and_purity():
    assert expected_scripts("ko") == ("Hangul",)
    assert expected_scripts("zh-TW") == ("Han", "Bopomofo")
    assert expected_scripts("pt_BR") == ("Latin",)
    assert set(expected_scripts("ja")) == {"Hiragana", "Katakana", "Han"}
    assert expected_scripts("xx") is None
    assert is_pure("한국어 테스트 123!", ("Hangul",)) is True
    assert is_pure("한국 PC방", ("Hangul",)) is False
    assert is_pure("漢字とカタカナ、ひらがな。", expected_scripts("ja")) is True
    assert is_pure("123 😀 !", ("Latin",)) is None


def test_script_purity_hand_computed():
    sp = script_purity(tiny_topk(), tiny_train(), ["de", "fr", "ru"])
    assert list(sp.columns) == list(TABLES["script_purity"].columns)
    # ru: c0 "собака" is Cyrillic only, c1 "машина car" mixes in Latin
    r = _row(sp, direction=POSITIVE, test_lang=ALL, train_lang="ru")  # only c1 (for x2)
    assert (r["n_topk"], r["pct_pure_topk"], r["n_train"], r["pct_pure_train"]) == (1, 0.0, 2, 50.0)
    assert r["other_scripts"] == "Latin 100%" and r["expected_script"] == "Cyrillic"
    r = _row(sp, direction=NEGATIVE, test_lang=ALL, train_lang="ru")  # c1 (x1), c0 (x2), c0 (y)
    assert (r["n_topk"], r["pct_pure_topk"]) == (3, pytest.approx(200 / 3))
    assert r["other_scripts"] == "Latin 33%"
    assert _row(sp, direction=POSITIVE, test_lang="de", train_lang="de")["pct_pure_topk"] == 100.0
    assert sp.attrs["notes"] == []


def test_script_purity_notes_unknown_languages():
    train = tiny_train().assign(lang=["de", "de", "xx", "xx", "ru", "ru"])
    sp = script_purity(tiny_topk(), train)
    assert "xx" not in set(sp["train_lang"])
    assert any("xx" in n for n in sp.attrs["notes"])
    with pytest.raises(NotApplicable):
        script_purity(tiny_topk(), tiny_train().assign(lang="xx"))


# ---------------------------------------------------------------- word-embedding share


def test_word_embedding_share_hand_computed():
    weight = np.array([0.5, 0.5, 0.25, 0.25, 0.0, 0.0])  # de half, fr a quarter, ru nothing
    we = SCORES * weight
    groups = {"word_embeddings": we, "layers": SCORES - we}
    test, train = tiny_test(), tiny_train()
    table = word_embedding_share(
        SCORES, groups, tiny_topk(), test["uid"], train["uid"], test["lang"], train["lang"], "word_embeddings", ["de", "fr", "ru"], block_rows=2
    )
    assert list(table.columns) == list(TABLES["word_embedding_share"].columns)
    for direction in (POSITIVE, NEGATIVE, "all"):
        sub = table[table["direction"] == direction]
        for r in sub.itertuples():
            expected = {"de": 50.0, "fr": 25.0, "ru": 0.0}[r.train_lang]
            assert r.abs_share == pytest.approx(expected)
            if r.score_sum != 0:
                assert r.share == pytest.approx(expected)
    r = _row(table, direction=POSITIVE, test_lang="de", train_lang="de")  # a0 (x1) 0.9, a1 (x2) 0.7
    assert (r["n_pairs"], r["score_sum"], r["word_embeddings_sum"]) == (2, pytest.approx(1.6), pytest.approx(0.8))
    assert _row(table, direction="all", test_lang="fr", train_lang="ru")["n_pairs"] == 2
    assert table.attrs["notes"] == []


def test_word_embedding_share_not_applicable_and_frozen():
    test, train = tiny_test(), tiny_train()
    args = (tiny_topk(), test["uid"], train["uid"], test["lang"], train["lang"], "word_embeddings")
    with pytest.raises(NotApplicable, match="no per-parameter-group breakdown"):
        word_embedding_share(SCORES, {}, *args)
    with pytest.raises(NotApplicable, match="no 'word_embeddings' group"):
        word_embedding_share(SCORES, {"layers": SCORES}, *args)
    frozen = word_embedding_share(SCORES, {"word_embeddings": np.zeros_like(SCORES), "layers": SCORES}, *args)
    assert (frozen["word_embeddings_sum"] == 0).all()
    assert any("frozen" in n for n in frozen.attrs["notes"])


# ---------------------------------------------------------------- the store as input (memory-mapped)


def test_analyses_read_a_memory_mapped_store(tmp_path):
    store = tmp_path / "influence"
    write_epoch(store, 1, {"scores": EPOCH1.astype(np.float32)})
    write_epoch(store, 2, {"scores": EPOCH2.astype(np.float32)})
    write_axes(store, tiny_train()["uid"].tolist(), tiny_test()["uid"].tolist())
    write_json(store / "meta.json", {"mode": "cosine", "epochs": [1, 2], "epochs_done": [1, 2], "complete": True})
    scores = load_scores(str(store))  # a str: load_scores looks for a RunDir's `.root`, which a Path also has
    assert isinstance(scores.epoch(1), np.memmap)
    summed = SummedMatrix([scores.epoch(e) for e in scores.epochs])
    from_store = topk_frame({SUMMED: summed}, tiny_test(), tiny_train(), 2)
    in_memory = topk_frame({SUMMED: SCORES}, tiny_test(), tiny_train(), 2)
    pd.testing.assert_frame_equal(from_store.drop(columns="score"), in_memory.drop(columns="score"))
    np.testing.assert_allclose(from_store["score"], in_memory["score"], atol=1e-6)
    avg = average_influence(summed, tiny_test()["lang"], tiny_train()["lang"])
    assert _row(avg, test_lang="de", train_lang="de")["mean_score"] == pytest.approx(0.5, abs=1e-6)
