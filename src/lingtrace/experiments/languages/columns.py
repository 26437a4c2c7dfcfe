"""The columns of the languages experiment's tables, with their meaning (the docs' tables and the
section's column notes are these dicts; ``outputs.write_table`` writes exactly these columns)."""

from __future__ import annotations

PLAN = {
    "sub_run": "the retraining's directory under experiments/ (languages/runs/no-XX, languages/runs/mix-JJJ, a reused zero-shot/runs/no-XX, or noise-floor/runs/seed-S)",
    "design": "leave-one-out or mixture (the design the table was made for)",
    "purpose": "leave-one-out (without one training language), mixture (a random fraction of every varied language) or noise floor (the unchanged training set, another seed)",
    "removed_lang": "leave-one-out: the training language left out of training and dev (data.exclude_lang); empty otherwise",
    "reused_from": "zero-shot when the zero-shot experiment's retraining without removed_lang is reused instead of retraining; empty otherwise",
    "train_seed": "training seed of the retraining",
    "n_train": "training examples it is trained on",
    "n_removed": "training examples of the base run left out",
}
MIXTURES = {
    "sub_run": "sub-run directory under experiments/ (languages/runs/mix-JJJ)",
    "mixture": "mixture index j (0-based)",
    "train_lang": "a varied training language",
    "fraction": "the fraction drawn for it, uniform in [experiment.languages_min_fraction, 1] (seeded by experiment.seed, j and the language)",
    "n_lang": "the base run's training examples in train_lang",
    "n_kept": "of those, the ones kept (round(fraction * n_lang), at least 1; a seeded random subset), read back from the sub-run's training data",
    "kept_fraction": "n_kept / n_lang: the regressor of the least-squares fit",
}
MARGINS = {
    "sub_run": "the retraining's directory under experiments/",
    "test_uid": "the selected test example",
    "test_lang": "its language",
    "label": "its gold label (class index)",
    "margin": "correct-class margin of the retrained final model: gold logit - logsumexp of the other logits",
    "p_label": "probability of the gold label under that model",
    "loss": "-log p_label = log(1 + exp(-margin))",
}
EFFECTS = {
    "design": "leave-one-out or mixture",
    "test_uid": "the selected test example (i)",
    "test_lang": "its language (X)",
    "label": "its gold label (class index)",
    "train_lang": "the training language removed (Y)",
    "sub_run": "leave-one-out: the retraining without train_lang (directory under experiments/); mixture: empty",
    "margin_base": "correct-class margin under the base run's final model",
    "margin": "leave-one-out: the margin under the retraining without train_lang; mixture: empty",
    "delta_margin": "the measured effect of removing train_lang. leave-one-out: margin_base - margin; mixture: the least-squares coefficient of train_lang's kept fraction on the margin (margin per unit fraction: removing all of train_lang lowers the margin by about this under the linear model). Positive = the test example relies on train_lang",
    "effect_se": "mixture: the standard error of delta_margin from the fit (residual variance with m - L - 1 degrees of freedom); leave-one-out: empty",
    "p_base": "probability of the gold label under the base final model",
    "p_label": "leave-one-out: the same under the retraining without train_lang; mixture: empty",
    "delta_p": "leave-one-out: p_base - p_label; mixture: the fit's coefficient of train_lang on p_label",
    "loss_base": "-log p_base",
    "loss": "leave-one-out: -log p_label under the retraining; mixture: empty",
    "delta_loss": "the increase in loss when train_lang is removed. leave-one-out: loss - loss_base; mixture: minus the fit's coefficient of train_lang on the loss",
}
MATRIX = {
    "design": "leave-one-out or mixture",
    "test_lang": "test language (X)",
    "train_lang": "training language removed (Y)",
    "n_test": "selected test examples of X",
    "mean": "mean of delta_margin over X's test examples: how much removing Y lowers X's correct-class margins",
    "ci_low": "percentile bootstrap 95% interval of the mean (test examples resampled, experiment.lds_resamples draws, seeded): lower end (empty with one test example)",
    "ci_high": "upper end",
    "fit_se": "mixture: standard error of the coefficient of Y in the least-squares fit of X's mean margin over the mixtures (it includes the retraining noise the test examples share); leave-one-out: empty",
    "noise": "seed-noise floor of X: the root mean square over the noise-floor seeds of the mean over X's test examples of margin_base - margin_seed (empty without noise seeds)",
    "within_noise": "the cell cannot be told from retraining noise: its interval includes 0, or |mean| <= noise, or (mixture) |mean| <= 1.96 fit_se; true when none of these can be computed",
    "mean_delta_p": "mean of delta_p over X's test examples",
    "mean_delta_loss": "mean of delta_loss over X's test examples",
}
PREDICTED = {
    "method": "influence method (a store under RUN/influence/)",
    "test_lang": "test language (X)",
    "train_lang": "training language (Y)",
    "n_test": "selected test examples of X",
    "predicted": "mean over X's test examples of the method's summed score (over checkpoints) summed over Y's training examples: its predicted effect of removing Y",
    "share": "the paper's Fig. 2 reading: mean over X's test examples of the % of their top-k most positively influential training examples (this method's summed score, k = experiment.top_k or analysis.k) in Y",
    "train_fraction": "% of the base run's training examples in Y (the share's chance level)",
    "measured": "the measured mean effect of the cell (matrix.parquet's mean)",
}
FAITHFULNESS = {
    "method": "influence method",
    "predictor": "summed scores (the sum of the method's scores over Y's training examples) or top-k share (the Fig. 2 share of Y in the top-k)",
    "n_test": "test examples with a defined language-level LDS (neither side constant across the training languages)",
    "n_langs": "training languages compared (each test example's correlation is over these)",
    "lds_mean": "language-level LDS: mean over test examples of the Spearman correlation, across the training languages, between the predictor and the measured delta_margin",
    "lds_ci_low": "percentile bootstrap 95% interval of lds_mean (test examples resampled; the retrainings held fixed): lower end",
    "lds_ci_high": "upper end",
    "distinguishable": "the interval excludes 0 (false: not distinguishable from chance)",
    "n_cells": "(test language, training language) cells of the matrices",
    "matrix_pearson": "Pearson correlation across the cells between the predictor's mean matrix and the measured mean matrix (empty when either is constant)",
    "matrix_spearman": "Spearman correlation across the cells (empty when either is constant)",
    "n_test_langs": "test languages",
    "top_agree": "test languages whose predicted top training language (largest cell) is the measured one",
    "top_other_agree": "test languages whose predicted top training language apart from their own is the measured one",
}
READINGS = {
    "method": "influence method",
    "predictor": "summed scores or top-k share",
    "test_lang": "test language (X)",
    "measured_top": "the training language whose removal lowers X's margins most (largest measured mean)",
    "measured_top_other": "the same among the training languages other than X",
    "measured_top_other_within_noise": "that cell is within noise (matrix.parquet)",
    "predicted_top": "the training language with the predictor's largest cell for X",
    "predicted_top_other": "the same among the training languages other than X",
    "agrees_top": "predicted_top == measured_top",
    "agrees_top_other": "predicted_top_other == measured_top_other",
    "rank_of_measured_top_other": "the rank the predictor gives measured_top_other among the training languages other than X (1 = first)",
    "spearman": "Spearman correlation across the training languages between the predictor's cells and the measured cells of X (empty when either is constant)",
}
TABLES = {
    "plan": PLAN,
    "mixtures": MIXTURES,
    "margins": MARGINS,
    "effects": EFFECTS,
    "matrix": MATRIX,
    "predicted": PREDICTED,
    "faithfulness": FAITHFULNESS,
    "readings": READINGS,
}
