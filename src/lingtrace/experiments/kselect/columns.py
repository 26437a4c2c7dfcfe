"""The columns of k-selection's tables (``RUN/experiments/k-selection/NAME.parquet``), documented in
its report section; every table is written with exactly these columns, in this order."""

from __future__ import annotations

PLAN = {
    "sub_run": "sub-run directory under runs/",
    "methods": "the influence methods whose removal this retraining is (comma-separated; one retraining serves identical training sets)",
    "group": "the test examples sharing this retraining: all, lang-XX (a test language) or ex-UID (one test example)",
    "direction": "positive (removed the union of the group's top-k largest scores), negative (top-k smallest), random (control)",
    "k": "k of the sweep",
    "n_test": "test examples in the group",
    "n_removed": "training examples removed",
    "n_train": "training examples left for the retraining",
}
CHANGES = {
    "method": "influence method whose scores chose the removal (random: the control sized like that method's positive removal)",
    "group": "the test examples sharing the retraining",
    "direction": "positive, negative or random",
    "k": "k of the sweep",
    "sub_run": "sub-run directory under runs/",
    "n_removed": "training examples removed in that retraining",
    "test_uid": "the test example",
    "test_lang": "its language",
    "label": "its gold label (class index)",
    "p_base": "probability of the gold label under the base run's final model",
    "p_retrained": "probability of the gold label under the retrained final model",
    "delta": "p_retrained - p_base (in [-1, 1]; negative = the model became less sure of the correct class)",
    "pred_retrained": "the retrained model's predicted class",
    "flipped": "the retrained model no longer predicts the gold label (the base model did: selected examples are correct)",
}
FAITHFULNESS = {
    "method": "influence method",
    "direction": "positive, negative or random",
    "k": "k of the sweep",
    "test_lang": "test language, or all",
    "n_test": "test examples",
    "n_retrainings": "retrainings behind these numbers",
    "n_removed_mean": "mean number of training examples removed per retraining",
    "mean_delta": "mean change in the probability of the gold label (p_retrained - p_base)",
    "std_delta": "standard deviation of the change over the test examples",
    "sem_delta": "standard error of the mean change (std / sqrt(n_test - 1); empty for one test example)",
    "median_delta": "median change",
    "q25_delta": "25th percentile of the change",
    "q75_delta": "75th percentile of the change",
    "flip_pct": "% of the test examples whose prediction is no longer the gold label",
    "mean_minus_random": "mean of (change - change of the random control) paired by test example (empty for random)",
    "p_vs_random": "two-sided Wilcoxon signed-rank p-value of those paired differences (empty when not computable)",
    "detectable_vs_random": "the paired difference these test examples detect with 80% power (5% level) given the noise floor's seed spread (empty without noise seeds)",
}
LEVELS_OFF = {
    "method": "influence method",
    "direction": "positive, negative or random",
    "levels_off_k": "smallest k after which the mean change (all test examples) moves by at most the tolerance; empty = still changing at the largest k",
    "mean_delta_at_k": "the mean change at levels_off_k",
    "range": "max - min of the mean changes over the sweep, k = 0 (change 0) included",
    "tolerance": "level_tolerance % of the range (probability units)",
}
TABLES = {"plan": PLAN, "changes": CHANGES, "faithfulness": FAITHFULNESS, "levels_off": LEVELS_OFF}
