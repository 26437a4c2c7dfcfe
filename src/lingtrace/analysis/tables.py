"""The tables ``lingtrace analyze`` writes to ``RUN/analysis/``: file names, what each reproduces, and columns.

This is the one place the table layout is described; the README's run-directory section and the
report's table captions are written from it (``markdown_reference()`` prints the README section).

Layout (``lingtrace.analysis.layout``): every analysis of ``TABLES`` once per influence method, in
``analysis/METHOD/`` (with that method's ``summary.json``); the tables comparing the methods
(``COMPARISON_TABLES``) in ``analysis/comparison/``; ``analysis/summary.json`` lists the methods.

Conventions shared by every table:

* ``epoch``: the checkpoint whose scores were used (1, 2, ...); ``0`` means the summed score
  (the sum over all checkpoints, the paper's main setting).
* ``direction``: ``positive`` (the top-k largest scores: the most positively influential training
  examples, "proponents") or ``negative`` (the top-k smallest scores, "opponents").
* ``test_lang`` / ``train_lang``: language codes; ``all`` in a ``test_lang`` column aggregates over
  every test example.
* percentages are in [0, 100].
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    reproduces: str
    description: str
    columns: dict[str, str]
    #: the folder under ``analysis/``: ``METHOD`` (one table per influence method) or ``comparison``
    folder: str = "METHOD"

    @property
    def file(self) -> str:
        return f"{self.name}.parquet"

    @property
    def path(self) -> str:
        """Where the table is, relative to the run directory (``METHOD`` stands for each method's name)."""
        return f"analysis/{self.folder}/{self.file}"


_EPOCH = "checkpoint whose scores were used; 0 = the summed score over all checkpoints"
_DIRECTION = "positive (top-k largest scores) or negative (top-k smallest scores)"

TOPK = TableSpec(
    "topk",
    "Top-k influential training examples",
    "the basis of every figure",
    "The k most positively and the k most negatively influential training examples of every selected "
    "test example, on the summed score and on each checkpoint's score; ties broken by training order.",
    {
        "epoch": _EPOCH,
        "direction": _DIRECTION,
        "test_uid": "the test example",
        "test_lang": "its language",
        "rank": "1 = the most extreme score",
        "train_uid": "the training example",
        "train_lang": "its language",
        "train_translation_id": "its translation id (shared by translations)",
        "score": "its score for the test example (summed or the checkpoint's, of this method)",
    },
)
LANGUAGE_SHARES = TableSpec(
    "language_shares",
    "Language shares of the top-k",
    "Fig. 2 (epoch 0) and Figs. 12-13 (per epoch)",
    "For each test language, the percentage of the top-k training examples that come from each training "
    "language, averaged over the test examples of that language.",
    {
        "epoch": _EPOCH,
        "direction": _DIRECTION,
        "test_lang": "test language",
        "train_lang": "training language",
        "share": "mean over the test examples of test_lang of the % of their top-k from train_lang",
        "share_std": "standard deviation of that % over the test examples",
        "n_test": "test examples of test_lang",
        "train_fraction": "% of all training examples that are in train_lang (the share expected by chance)",
    },
)
IN_LANGUAGE_SHARE = TableSpec(
    "in_language_share",
    "In-language share per epoch",
    "Fig. 3",
    "The percentage of a test example's top-k training examples that are in the test example's own "
    "language, averaged per test language (and over all test examples: test_lang = all), per checkpoint.",
    {
        "epoch": _EPOCH,
        "direction": _DIRECTION,
        "test_lang": "test language, or all",
        "share": "mean % of the top-k in the test example's own language",
        "share_std": "standard deviation over the test examples",
        "n_test": "test examples",
        "train_fraction": "% of the training examples in the test example's language (chance level)",
    },
)
AVERAGE_INFLUENCE = TableSpec(
    "average_influence",
    "Average influence between languages",
    "Tables 3 and 6",
    "The mean score over every (test example, training example) pair of a test language and a "
    "training language: all training examples, not only the top-k.",
    {
        "epoch": _EPOCH,
        "test_lang": "test language",
        "train_lang": "training language",
        "mean_score": "mean score over the pairs",
        "std_score": "standard deviation of the score over the pairs",
        "n_pairs": "number of (test, training) pairs",
    },
)
TRANSLATION_OVERLAP = TableSpec(
    "translation_overlap",
    "Reinforcing vs complementary influence",
    "Table 4",
    "Parallel tasks only. Among a test example's top-k training examples from other languages, the "
    "percentage that are translations (same translation_id) of one of its top-k examples in its own "
    "language: high = other languages reinforce the in-language evidence, low = they complement it. "
    "On the summed score.",
    {
        "direction": _DIRECTION,
        "test_lang": "test language, or all",
        "train_lang": "the other training language, or all (every language but test_lang)",
        "n_test": "test examples",
        "n_cross": "top-k examples from train_lang, summed over the test examples",
        "n_translations": "of those, translations of one of the same test example's in-language top-k examples",
        "pct_translations": "100 * n_translations / n_cross (empty when n_cross = 0)",
        "pct_by_chance": "the same % expected if the cross-lingual top-k were drawn at random from train_lang",
        "n_test_without_in_language": "test examples with no top-k example in their own language "
        "(their cross-lingual examples cannot be translations of one)",
    },
)
DYNAMICS_WILCOXON = TableSpec(
    "dynamics_wilcoxon",
    "Do epochs differ? Wilcoxon signed-rank tests",
    "Section on fine-tuning dynamics (Fig. 3)",
    "Two-sided Wilcoxon signed-rank tests (scipy.stats.wilcoxon) between every pair of checkpoints, "
    "paired over test examples. measure = in_language_share: each test example's in-language % of its "
    "top-k at checkpoint a vs at checkpoint b. measure = mean_rank_of_top_k: the mean rank, in "
    "checkpoint a's ranking of all training examples (1 = most extreme), of the test example's top-k "
    "under the summed score, vs the same in checkpoint b's ranking.",
    {
        "measure": "in_language_share or mean_rank_of_top_k",
        "direction": _DIRECTION,
        "test_lang": "test language, or all",
        "epoch_a": "first checkpoint",
        "epoch_b": "second checkpoint",
        "n": "paired test examples",
        "mean_a": "mean of the measure at epoch_a",
        "mean_b": "mean of the measure at epoch_b",
        "statistic": "Wilcoxon statistic (the smaller of the signed-rank sums, as scipy reports it)",
        "p_value": "two-sided p-value",
    },
)
SCORE_DISTRIBUTIONS = TableSpec(
    "score_distributions",
    "Score distributions per training language",
    "Figs. 9-11",
    "Summary of the summed scores of the top-k examples, per test language and training language.",
    {
        "direction": _DIRECTION,
        "test_lang": "test language",
        "train_lang": "training language",
        "n": "top-k entries from train_lang over the test examples of test_lang",
        "mean": "mean score",
        "std": "standard deviation",
        "min": "minimum",
        "q25": "25th percentile",
        "median": "median",
        "q75": "75th percentile",
        "max": "maximum",
    },
)
EXAMPLES = TableSpec(
    "examples",
    "Example tables",
    "Tables 1, 2 and 5",
    "For every test example, its analysis.examples_per_table most positively and most negatively "
    "influential training examples (summed score) with text, language, label and score.",
    {
        "test_uid": "the test example",
        "test_lang": "its language",
        "test_text": "its text (pairs joined with [SEP])",
        "test_label": "its gold label (class index)",
        "test_label_name": "its label name",
        "direction": _DIRECTION,
        "rank": "1 = the most extreme score",
        "train_uid": "the training example",
        "train_lang": "its language",
        "train_text": "its text",
        "train_label": "its label (class index)",
        "train_label_name": "its label name",
        "score": "summed score",
    },
)
SCRIPT_PURITY = TableSpec(
    "script_purity",
    "Script and code-switching",
    "the Korean/Hangul observation",
    "For each training language, the percentage of its top-k examples (summed score) whose letters are "
    "all in the language's expected script (Unicode script of each letter; digits, punctuation, symbols "
    "and spaces are script-neutral), next to the same percentage over all its training examples. "
    "Examples without any letter are left out.",
    {
        "direction": _DIRECTION,
        "test_lang": "test language, or all",
        "train_lang": "training language",
        "expected_script": "the script(s) expected for train_lang, joined with +",
        "n_topk": "top-k entries from train_lang with at least one letter",
        "pct_pure_topk": "% of them written only in the expected script",
        "n_train": "training examples of train_lang with at least one letter",
        "pct_pure_train": "% of them written only in the expected script (the baseline)",
        "other_scripts": "the other scripts found in the mixed top-k entries, with the % of entries having each",
    },
)
WORD_EMBEDDING_SHARE = TableSpec(
    "word_embedding_share",
    "Word-embedding share of influence",
    "the shared-subword question",
    "From the influence stage's per-parameter-group breakdown (summed over checkpoints): how much of the "
    "score comes from the word-embedding matrix, per test language and training language; for the "
    "top-k entries (positive / negative) and for all pairs (all).",
    {
        "direction": "positive / negative (the top-k entries) or all (every pair)",
        "test_lang": "test language",
        "train_lang": "training language",
        "n_pairs": "number of (test, training) pairs",
        "score_sum": "sum of the scores",
        "word_embeddings_sum": "sum of the word-embedding group's part of the scores",
        "share": "100 * word_embeddings_sum / score_sum (signed; empty when score_sum = 0)",
        "abs_share": "100 * sum |word-embedding part| / sum over groups of |group part| (in [0, 100])",
    },
)

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        TOPK,
        LANGUAGE_SHARES,
        IN_LANGUAGE_SHARE,
        AVERAGE_INFLUENCE,
        TRANSLATION_OVERLAP,
        DYNAMICS_WILCOXON,
        SCORE_DISTRIBUTIONS,
        EXAMPLES,
        SCRIPT_PURITY,
        WORD_EMBEDDING_SHARE,
    )
}


def _without(columns: dict[str, str], *names: str) -> dict[str, str]:
    """A table's column descriptions less ``names``."""
    return {k: v for k, v in columns.items() if k not in names}


_COMPARED = "Summed score, one row per influence method present (method)."
_PAIR = {
    "method_a": "the first method of the pair (methods in the order of analysis/summary.json)",
    "method_b": "the second method of the pair",
}
METHODS_IN_LANGUAGE_SHARE = TableSpec(
    "methods_in_language_share",
    "In-language share per method",
    "the diagonal of Fig. 2, per method",
    "The in-language share (in_language_share at epoch 0) side by side for every method. " + _COMPARED,
    {
        "method": "influence method",
        **_without(IN_LANGUAGE_SHARE.columns, "epoch"),
        "p_vs_chance": "two-sided p-value of a one-sample t-test of the test examples' in-language % against "
        "train_fraction (scipy.stats.ttest_1samp); empty for all (the chance level differs between its test examples), "
        "with fewer than two test examples or with no spread",
    },
    folder="comparison",
)
METHODS_TOP_OTHER_LANGUAGE = TableSpec(
    "methods_top_other_language",
    "The other language each test language relies on most, per method",
    "Fig. 2 without its diagonal, per method",
    "For every test language, the training language other than its own with the largest share of the "
    "top-k (language_shares at epoch 0; ties go to the earlier language in the config's order), and the "
    "runner-up. " + _COMPARED,
    {
        "method": "influence method",
        "direction": _DIRECTION,
        "test_lang": "test language",
        "train_lang": "the other training language with the largest share",
        "share": "its mean % of the top-k",
        "train_fraction": "% of all training examples in train_lang (its share by chance)",
        "runner_up_lang": "the other training language with the second largest share (empty with only one other)",
        "runner_up_share": "its mean % of the top-k",
    },
    folder="comparison",
)
METHODS_REINFORCING_SHARE = TableSpec(
    "methods_reinforcing_share",
    "Reinforcing share per method",
    "Table 4, per method",
    "Parallel tasks only. The percentage of the cross-lingual top-k that are translations of in-language "
    "top-k examples (translation_overlap, every other language together) side by side for every method. "
    + _COMPARED,
    {
        "method": "influence method",
        **_without(TRANSLATION_OVERLAP.columns, "train_lang", "n_translations", "n_test_without_in_language"),
    },
    folder="comparison",
)
METHODS_TOPK_OVERLAP = TableSpec(
    "methods_topk_overlap",
    "Top-k overlap between methods, per test example",
    "do the methods pick the same training examples?",
    "For every pair of methods and every test example, how many of its top-k training examples (summed "
    "score) the two methods share.",
    {
        **_PAIR,
        "direction": _DIRECTION,
        "test_uid": "the test example",
        "test_lang": "its language",
        "k": "the size of each top-k set",
        "n_common": "training examples in both methods' top-k",
        "overlap": "100 * n_common / k",
    },
    folder="comparison",
)
METHODS_TOPK_OVERLAP_SUMMARY = TableSpec(
    "methods_topk_overlap_summary",
    "Top-k overlap between methods, distribution",
    "do the methods pick the same training examples?",
    "The distribution over test examples of methods_topk_overlap, per method pair, direction and test "
    "language (and all).",
    {
        **_PAIR,
        "direction": _DIRECTION,
        "test_lang": "test language, or all",
        "n_test": "test examples",
        **{k: v + (" overlap (%) over the test examples" if k == "mean" else "") for k, v in _without(SCORE_DISTRIBUTIONS.columns, "direction", "test_lang", "train_lang", "n").items()},
        "pct_by_chance": "the overlap expected between two random top-k sets: 100 * k / n_train",
    },
    folder="comparison",
)

COMPARISON_TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        METHODS_IN_LANGUAGE_SHARE,
        METHODS_TOP_OTHER_LANGUAGE,
        METHODS_REINFORCING_SHARE,
        METHODS_TOPK_OVERLAP,
        METHODS_TOPK_OVERLAP_SUMMARY,
    )
}
SUMMARY = "summary.json"


def markdown_reference() -> str:
    """The README's description of ``RUN/analysis/`` (one block per table)."""
    lines = []
    for t in [*TABLES.values(), *COMPARISON_TABLES.values()]:
        lines.append(f"**`{t.path}`** ({t.reproduces}): {t.description}")
        lines.append("")
        lines.append("| column | meaning |")
        lines.append("|---|---|")
        lines += [f"| `{c}` | {m} |" for c, m in t.columns.items()]
        lines.append("")
    return "\n".join(lines)
