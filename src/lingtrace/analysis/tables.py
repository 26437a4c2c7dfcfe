"""The tables ``lingtrace analyze`` writes to ``RUN/analysis/``: file names, what each reproduces, and columns.

This is the one place the table layout is described; the README's run-directory section and the
report's table captions are written from it (``markdown_reference()`` prints the README section).

Conventions shared by every table:

* ``epoch``: the checkpoint whose scores were used (1, 2, ...); ``0`` means the summed TracIn score
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

    @property
    def file(self) -> str:
        return f"{self.name}.parquet"


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
        "score": "its TracIn score for the test example",
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
    "The mean TracIn score over every (test example, training example) pair of a test language and a "
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
        "score": "summed TracIn score",
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
SUMMARY = "summary.json"


def markdown_reference() -> str:
    """The README's description of ``RUN/analysis/`` (one block per table)."""
    lines = []
    for t in TABLES.values():
        lines.append(f"**`analysis/{t.file}`** ({t.reproduces}): {t.description}")
        lines.append("")
        lines.append("| column | meaning |")
        lines.append("|---|---|")
        lines += [f"| `{c}` | {m} |" for c, m in t.columns.items()]
        lines.append("")
    return "\n".join(lines)
