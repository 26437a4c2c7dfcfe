"""k selection / faithfulness (paper Fig. 1 and 6-8), with a random control the paper lacks, per method.

For every influence method present in the base run (``RUN/influence/METHOD/``, discovered), every group
of test examples (``experiment.k_grouping``: one test example, a test language, or all chosen test
examples), every k of ``experiment.ks`` and every direction of ``experiment.k_directions``, the model is
retrained (base config and seed) without:

* ``positive``: the union over the group's test examples of their top-k training examples by the
  method's summed score in the base run (largest scores);
* ``negative``: the same with the k smallest scores;
* ``random`` (control): as many training examples as the ``positive`` removal of the same group and k,
  drawn uniformly from the whole training set. The draw is the first n entries of one permutation of
  the training rows, seeded by ``(experiment.seed, group name)`` only: it never sees the scores (it may
  overlap the influential sets by chance, as a random draw would), and it is nested across k like the
  top-k sets are.

A removal whose training set is identical to one already planned (the random controls of methods whose
positive removals have the same size, or two methods agreeing on a top-k) reuses that retraining.
tracin's sub-runs keep the names ``GROUP-DIRECTION-kK``; another method's are ``GROUP-METHOD-DIRECTION-kK``.
Every figure is shown against the noise floor (``noise``): the same training set retrained with other
seeds, and the paired difference against the random control that the chosen test examples can detect.

The measured change for a test example is ``p_retrained - p_base``: the probability of its gold label
under the retrained final model minus under the base final model (both predicted the same way on the
same example). Test examples are the base run's selected ones, optionally subsampled per language
(``experiment.k_test_per_lang``, seeded).

"Levels off": with the mean changes m(k) over the sweep and the anchor m(0) = 0, range R = max - min
of all of them; the change levels off at the smallest k after which no later mean differs from m(k) by
more than ``experiment.level_tolerance`` % of R. When only the largest k qualifies, the change has not
levelled off within the sweep (reported as empty).
"""

from __future__ import annotations

import logging
import re
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lingtrace.analysis.common import ALL, NEGATIVE, POSITIVE
from lingtrace.analysis.topk import top_k
from lingtrace.config import Config
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.experiments import common, noise
from lingtrace.experiments import html as section_html
from lingtrace.influence.methods import DEFAULT_METHOD
from lingtrace.io import write_parquet
from lingtrace.report.html import pvalue
from lingtrace.run import read_selection

log = logging.getLogger(__name__)

NAME = "k-selection"
TITLE = "Choosing k: retraining without the most influential examples"
REPRODUCES = "Fig. 1, 6-8 (+ random control)"
RANDOM = "random"  # the control, beside the analyses' positive / negative directions

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


def retraining_settings(cfg: Config) -> dict[str, Any]:
    x = cfg.experiment
    return {
        "ks": sorted(set(x.ks)),
        "k_directions": [d for d in (POSITIVE, NEGATIVE, RANDOM) if d in x.k_directions],
        "k_languages": list(x.k_languages) or list(cfg.data.languages),
        "k_test_per_lang": x.k_test_per_lang,
        "k_grouping": x.k_grouping,
        "seed": x.seed,
    }


def result_settings(cfg: Config) -> dict[str, Any]:
    return {"level_tolerance": cfg.experiment.level_tolerance}


# ---------------------------------------------------------------- the plan (pure functions)


@dataclass(frozen=True)
class Group:
    name: str
    rows: tuple[int, ...]  # rows of the score matrix (selected test examples)


@dataclass
class Removal:
    group: Group
    direction: str
    k: int
    columns: np.ndarray  # sorted training-example columns removed
    best_rank: np.ndarray | None = None  # per removed column: its best rank among the group's top-k
    n_tests: np.ndarray | None = None  # per removed column: how many of the group's test examples have it in their top-k
    draw_position: np.ndarray | None = None  # random: position in the seeded permutation
    method: str = DEFAULT_METHOD
    shared_with: str | None = None  # the sub-run of an identical removal planned before, which this one reuses

    @property
    def name(self) -> str:
        """This removal's own sub-run name."""
        prefix = "" if self.method == DEFAULT_METHOD else f"{_safe(self.method)}-"
        return f"{self.group.name}-{prefix}{self.direction}-k{self.k}"

    @property
    def sub_run(self) -> str:
        """The sub-run that holds its retraining (its own, or the identical one it reuses)."""
        return self.shared_with or self.name


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def choose_tests(test_langs: Sequence[str], languages: Sequence[str], per_lang: int | None, seed: int) -> np.ndarray:
    """Rows of the chosen test examples: per language of ``languages``, all of them or ``per_lang`` drawn with ``seed``."""
    langs = np.asarray([str(x) for x in test_langs], dtype=object)
    out = []
    for lang in languages:
        idx = np.flatnonzero(langs == lang)
        if per_lang is not None and len(idx) > per_lang:
            rng = np.random.default_rng([int(seed) % 2**32, _crc("k-selection-tests"), _crc(lang)])
            idx = np.sort(rng.choice(idx, size=per_lang, replace=False))
        out.append(idx)
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def _safe(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]
    return clean if clean == name else f"{clean}_{_crc(name):08x}"


def make_groups(test_uids: Sequence[str], test_langs: Sequence[str], rows: np.ndarray, grouping: str, languages: Sequence[str]) -> list[Group]:
    if grouping == "all":
        return [Group(ALL, tuple(int(r) for r in rows))]
    if grouping == "language":
        return [
            Group(f"lang-{_safe(lang)}", tuple(int(r) for r in rows if test_langs[r] == lang))
            for lang in languages
            if any(test_langs[r] == lang for r in rows)
        ]
    return [Group(f"ex-{_safe(str(test_uids[r]))}", (int(r),)) for r in rows]


def topk_union(matrix_rows: np.ndarray, k: int, largest: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted columns in the union of the rows' top-k, best rank of each (1 = most extreme), number of rows having it)."""
    res = top_k(np.asarray(matrix_rows, dtype=np.float64), k, largest=largest)
    cols = res.indices.ravel()
    ranks = np.tile(np.arange(1, res.indices.shape[1] + 1), res.indices.shape[0])
    uniq, inv, counts = np.unique(cols, return_inverse=True, return_counts=True)
    best = np.full(len(uniq), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, inv, ranks)
    return uniq, best, counts


def random_removal(n_train: int, n: int, seed: int, group: str) -> tuple[np.ndarray, np.ndarray]:
    """The random control: (sorted columns, their draw positions) of the first ``n`` entries of a permutation
    of ``range(n_train)`` seeded by ``(seed, group)``. It takes no scores, so it cannot depend on them."""
    rng = np.random.default_rng([int(seed) % 2**32, _crc("random-removal"), _crc(group)])
    perm = rng.permutation(n_train)[:n]
    order = np.argsort(perm)
    return perm[order], order.astype(np.int64)


def plan_removals(
    matrix: np.ndarray, groups: Sequence[Group], ks: Sequence[int], directions: Sequence[str], seed: int, method: str = DEFAULT_METHOD
) -> list[Removal]:
    """Every removal of the sweep for one method, from its summed score matrix [selected test x train]."""
    n_train = matrix.shape[1]
    if max(ks) >= n_train:
        raise LingtraceError(
            f"experiment.ks has k={max(ks)}, but the base run has only {n_train} training examples",
            f"choose every k below {n_train}",
        )
    out = []
    for g in groups:
        rows = np.asarray(matrix[list(g.rows)], dtype=np.float64)
        for k in sorted(set(ks)):
            pos = topk_union(rows, k, largest=True)
            found = {POSITIVE: pos}
            if NEGATIVE in directions:
                found[NEGATIVE] = topk_union(rows, k, largest=False)
            for d in (POSITIVE, NEGATIVE, RANDOM):
                if d not in directions:
                    continue
                if d == RANDOM:
                    cols, draw = random_removal(n_train, len(pos[0]), seed, g.name)
                    r = Removal(g, d, k, cols, draw_position=draw, method=method)
                else:
                    cols, best, counts = found[d]
                    r = Removal(g, d, k, cols, best_rank=best, n_tests=counts, method=method)
                if len(r.columns) >= n_train:
                    raise LingtraceError(
                        f"k={k} removes all {n_train} training examples for group {g.name} ({d})",
                        "choose smaller experiment.ks, experiment.k_grouping=example or fewer test examples (experiment.k_test_per_lang)",
                    )
                out.append(r)
    return out


def share_identical(removals: Sequence[Removal]) -> list[Removal]:
    """Point every removal whose (group, removed columns) equals an earlier one at that one's sub-run
    (``shared_with``); returns the removals that need a retraining of their own, in order."""
    first: dict[tuple[str, bytes], str] = {}
    own = []
    for r in removals:
        key = (r.group.name, np.asarray(r.columns, dtype=np.int64).tobytes())
        if key in first:
            r.shared_with = first[key]
        else:
            first[key] = r.name
            own.append(r)
    return own


def levels_off(ks: Sequence[int], means: Sequence[float], tolerance_pct: float) -> tuple[int | None, float, float]:
    """(levels-off k or None, range, tolerance) by the module's definition (anchor k = 0, change 0)."""
    order = np.argsort(np.asarray(ks))
    k_sorted = [int(ks[i]) for i in order]
    m = np.asarray([float(means[i]) for i in order], dtype=np.float64)
    if len(m) == 0 or not np.all(np.isfinite(m)):
        return None, float("nan"), float("nan")
    allm = np.concatenate([[0.0], m])
    rng = float(allm.max() - allm.min())
    tol = tolerance_pct / 100.0 * rng
    for i in range(len(m) - 1):
        if np.all(np.abs(m[i + 1 :] - m[i]) <= tol):
            return k_sorted[i], rng, tol
    return None, rng, tol


# ---------------------------------------------------------------- result tables (pure functions)


def faithfulness_table(changes: pd.DataFrame, languages: Sequence[str], noise_sd: dict[str, float] | None = None) -> pd.DataFrame:
    """Per method, direction, k and test language (and all): the change's statistics, paired against the
    random control. ``noise_sd``: per test language and ``all``, the seed spread of the gold-label
    probability (``noise.summarize``'s ``p_sd``) for the detectable difference."""
    from scipy.stats import wilcoxon

    rows = []
    noise_sd = noise_sd or {}
    key_cols = ["method", "group", "k", "test_uid"]
    rand = changes[changes["direction"] == RANDOM].set_index(key_cols)["delta"]
    for (method, direction, k), grp in changes.groupby(["method", "direction", "k"], sort=False):
        langs = [lang for lang in languages if (grp["test_lang"] == lang).any()]
        for lang in [*langs, ALL]:
            sub = grp if lang == ALL else grp[grp["test_lang"] == lang]
            d = sub["delta"].to_numpy(dtype=np.float64)
            n = len(d)
            diff_mean, p = float("nan"), float("nan")
            if direction != RANDOM and len(rand):
                key = pd.MultiIndex.from_frame(sub[key_cols])
                r = rand.reindex(key).to_numpy(dtype=np.float64)
                ok = np.isfinite(r)
                if ok.any():
                    diff = d[ok] - r[ok]
                    diff_mean = float(diff.mean())
                    if len(diff) >= 2 and np.any(diff != 0):
                        p = float(wilcoxon(diff).pvalue)
            rows.append(
                {
                    "method": method,
                    "direction": direction,
                    "k": int(k),
                    "test_lang": lang,
                    "n_test": n,
                    "n_retrainings": int(sub["sub_run"].nunique()),
                    "n_removed_mean": float(sub.drop_duplicates("sub_run")["n_removed"].mean()),
                    "mean_delta": float(d.mean()),
                    "std_delta": float(d.std()),
                    "sem_delta": float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
                    "median_delta": float(np.median(d)),
                    "q25_delta": float(np.percentile(d, 25)),
                    "q75_delta": float(np.percentile(d, 75)),
                    "flip_pct": float(100.0 * sub["flipped"].mean()),
                    "mean_minus_random": diff_mean,
                    "p_vs_random": p,
                    "detectable_vs_random": noise.detectable_difference(noise_sd.get(lang, float("nan")), n) if direction != RANDOM else float("nan"),
                }
            )
    out = pd.DataFrame(rows, columns=list(FAITHFULNESS))
    method_order = {m: i for i, m in enumerate(dict.fromkeys(changes["method"]))}
    orders = {"method": method_order, "direction": {POSITIVE: 0, NEGATIVE: 1, RANDOM: 2}, "test_lang": {lang: i for i, lang in enumerate([*languages, ALL])}}
    return out.sort_values(
        ["method", "direction", "k", "test_lang"], key=lambda s: s.map(orders[s.name]) if s.name in orders else s, kind="stable"
    ).reset_index(drop=True)


def levels_off_table(faith: pd.DataFrame, tolerance_pct: float) -> pd.DataFrame:
    rows = []
    for method in dict.fromkeys(faith["method"]):
        for direction in (POSITIVE, NEGATIVE, RANDOM):
            sub = faith[(faith["method"] == method) & (faith["direction"] == direction) & (faith["test_lang"] == ALL)].sort_values("k")
            if sub.empty:
                continue
            k, rng, tol = levels_off(sub["k"].tolist(), sub["mean_delta"].tolist(), tolerance_pct)
            at = float(sub.loc[sub["k"] == k, "mean_delta"].iloc[0]) if k is not None else float("nan")
            rows.append({"method": method, "direction": direction, "levels_off_k": k, "mean_delta_at_k": at, "range": rng, "tolerance": tol})
    out = pd.DataFrame(rows, columns=list(LEVELS_OFF))
    out["levels_off_k"] = out["levels_off_k"].astype("Int64")
    return out


# ---------------------------------------------------------------- running it


def _changed_frame(base: common.Base, r: Removal, reason: str) -> pd.DataFrame:
    rows = base.train.iloc[r.columns][schema.EXAMPLE_COLUMNS].reset_index(drop=True)
    rows["split"] = "train"
    rows["change"] = "removed"
    rows["reason"] = reason
    n = len(rows)
    rows["best_rank"] = pd.array(r.best_rank if r.best_rank is not None else [None] * n, dtype="Int64")
    rows["n_tests_in_top_k"] = pd.array(r.n_tests if r.n_tests is not None else [None] * n, dtype="Int64")
    rows["draw_position"] = pd.array(r.draw_position if r.draw_position is not None else [None] * n, dtype="Int64")
    return rows


def _reason(r: Removal, test_uids: Sequence[str], seed: int) -> str:
    if r.direction == RANDOM:
        return (
            f"random control: {len(r.columns)} training examples (as many as the {r.method} positive removal of group {r.group.name} at k={r.k}) "
            f"drawn uniformly with seed ({seed}, {r.group.name!r}), independent of the scores"
        )
    which = "largest" if r.direction == POSITIVE else "smallest"
    return (
        f"union of the top-{r.k} training examples with the {which} summed {r.method} scores of the base run "
        f"for test example(s) {', '.join(test_uids)}"
    )


def build(base: common.Base, cfg: Config, methods: Sequence[str] = (DEFAULT_METHOD,)) -> tuple[list[Removal], list[common.SubRunSpec], pd.DataFrame]:
    """Every method's removals (those with an identical training set share one retraining), the sub-runs and the plan."""
    st = retraining_settings(cfg)
    test_uids = base.selected[schema.UID].astype(str).tolist()
    test_langs = base.selected[schema.LANG].astype(str).tolist()
    rows = choose_tests(test_langs, st["k_languages"], st["k_test_per_lang"], st["seed"])
    if len(rows) == 0:
        raise LingtraceError(
            f"the base run has no selected test examples in {', '.join(st['k_languages'])}",
            f"choose experiment.k_languages among the languages in {base.run.selection_path}",
        )
    groups = make_groups(test_uids, test_langs, rows, st["k_grouping"], st["k_languages"])
    removals = [r for m in methods for r in plan_removals(base.method_total(m), groups, st["ks"], st["k_directions"], st["seed"], method=m)]
    own = share_identical(removals)
    served = {r.name: [q.method for q in removals if q.sub_run == r.name] for r in own}
    specs, plan = [], []
    for r in own:
        uids = [test_uids[i] for i in r.group.rows]
        keep = np.ones(len(base.train), dtype=bool)
        keep[r.columns] = False
        train = base.train[keep].reset_index(drop=True)
        selection = base.selected.iloc[list(r.group.rows)].reset_index(drop=True)
        reason = _reason(r, uids, st["seed"])
        specs.append(
            common.SubRunSpec(
                name=r.sub_run,
                cfg=cfg,
                change="removed",
                reason=reason,
                test_examples=selection,
                eval_frame=selection,
                influence=False,
                train=train,
                dev=base.dev,
                test=base.test_pool,
                changed=_changed_frame(base, r, reason),
                info={"group": r.group.name, "direction": r.direction, "k": r.k, "methods": served[r.name], "test_uids": uids},
            )
        )
        plan.append(
            {
                "sub_run": r.sub_run,
                "methods": ",".join(dict.fromkeys(served[r.name])),
                "group": r.group.name,
                "direction": r.direction,
                "k": r.k,
                "n_test": len(uids),
                "n_removed": len(r.columns),
                "n_train": int(keep.sum()),
            }
        )
    return removals, specs, pd.DataFrame(plan, columns=list(PLAN))


def base_predictions(base: common.Base, exp_dir: Path, chosen: pd.DataFrame) -> pd.DataFrame:
    """The base final model's predictions on the chosen test examples (computed once, like the sub-runs')."""
    path = exp_dir / common.BASE_PREDICTIONS
    if path.exists():
        old = pd.read_parquet(path)
        if set(old[schema.UID]) >= set(chosen[schema.UID]):
            return old
    preds = common.predict_frame(base.run, base.cfg, chosen[schema.EXAMPLE_COLUMNS])
    write_parquet(path, preds)
    return preds


def changes_table(removals: Sequence[Removal], subs: dict, base_preds: pd.DataFrame, n_removed: dict[str, int]) -> pd.DataFrame:
    bp = base_preds.set_index(schema.UID)
    parts = []
    for r in removals:
        sel = read_selection(subs[r.sub_run])
        uids = sel[schema.UID].astype(str)
        parts.append(
            pd.DataFrame(
                {
                    "method": r.method,
                    "group": r.group.name,
                    "direction": r.direction,
                    "k": int(r.k),
                    "sub_run": r.sub_run,
                    "n_removed": int(n_removed[r.sub_run]),
                    "test_uid": uids.to_numpy(),
                    "test_lang": sel[schema.LANG].astype(str).to_numpy(),
                    "label": sel[schema.LABEL].to_numpy(dtype=np.int64),
                    "p_base": bp.loc[uids, common.P_LABEL].to_numpy(dtype=np.float64),
                    "p_retrained": sel[common.P_LABEL].to_numpy(dtype=np.float64),
                    "pred_retrained": sel[schema.PRED].to_numpy(dtype=np.int64),
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    out["delta"] = out["p_retrained"] - out["p_base"]
    out["flipped"] = out["pred_retrained"] != out["label"]
    return out[list(CHANGES)]


def _figure(faith: pd.DataFrame, lo: pd.DataFrame, floor_row: dict[str, Any]):
    """One panel per method: mean change against k per direction, the noise floor as a band."""
    from lingtrace.report.figures import subplots

    colors = {POSITIVE: "#2b7bba", NEGATIVE: "#c0392b", RANDOM: "#7f7f7f"}
    labels = {POSITIVE: "most positive removed", NEGATIVE: "most negative removed", RANDOM: "random control"}
    methods = list(dict.fromkeys(faith["method"]))
    fig, axes = subplots(1, len(methods), figsize=(3.6 * len(methods) + 1.2, 4.2), sharey=True, squeeze=False)
    allrows = faith[faith["test_lang"] == ALL]
    ks = sorted(allrows["k"].unique())
    step = (max(ks) - min(ks)) / 60 if len(ks) > 1 else 0.5
    for ax, method in zip(axes[0], methods, strict=True):
        mine = allrows[allrows["method"] == method]
        if floor_row:
            band = floor_row["max_abs_mean_delta_p"]
            ax.axhspan(-band, band, color="#dddddd", alpha=0.6, label="seed alone (largest mean change)")
        for i, d in enumerate((POSITIVE, NEGATIVE, RANDOM)):
            sub = mine[mine["direction"] == d].sort_values("k")
            if sub.empty:
                continue
            x = sub["k"].to_numpy(dtype=float) + (i - 1) * step
            ax.errorbar(x, sub["mean_delta"], yerr=sub["std_delta"], marker="o", capsize=3, color=colors[d], label=labels[d])
            k = lo.loc[(lo["method"] == method) & (lo["direction"] == d), "levels_off_k"]
            if d == POSITIVE and len(k) and not pd.isna(k.iloc[0]):
                ax.axvline(float(k.iloc[0]), color=colors[d], linestyle=":", linewidth=1)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(ks)
        ax.set_xlabel("k (top-k removed per test example)")
        ax.set_title(method, fontsize=10)
    axes[0][0].set_ylabel("change in P(correct class)")
    axes[0][0].legend(fontsize=7, loc="best")
    n = int(allrows["n_test"].max()) if len(allrows) else 0
    fig.suptitle(f"Retraining without the top-k: mean ± std over {n} test examples", fontsize=10)
    return fig


def _readings(faith: pd.DataFrame, lo: pd.DataFrame, tol: float, floor_row: dict[str, Any]) -> list[str]:
    allrows = faith[faith["test_lang"] == ALL]
    if allrows.empty:
        return []
    kmax = int(allrows["k"].max())
    out = []
    for method in dict.fromkeys(allrows["method"]):
        at = allrows[(allrows["method"] == method) & (allrows["k"] == kmax)].set_index("direction")
        for d, what in ((POSITIVE, "most positively"), (NEGATIVE, "most negatively")):
            if d not in at.index:
                continue
            row = at.loc[d]
            verb = "lowered" if row["mean_delta"] < 0 else "raised"
            text = (
                f"{method}: at k = {kmax}, retraining without the {what} influential training examples ({row['n_removed_mean']:.0f} removed on average) "
                f"{verb} the probability of the correct class by {abs(row['mean_delta']):.3f} on average (std {row['std_delta']:.3f}, {int(row['n_test'])} test examples)"
            )
            if RANDOM in at.index:
                text += f", against a change of {at.loc[RANDOM, 'mean_delta']:+.3f} when as many random examples are removed"
                if np.isfinite(row["p_vs_random"]):
                    text += f" (paired Wilcoxon p = {row['p_vs_random']:.3g})"
            text += "."
            detectable = row["detectable_vs_random"]
            if np.isfinite(row["mean_minus_random"]) and np.isfinite(detectable):
                if abs(row["mean_minus_random"]) < detectable:
                    text += (
                        f" The difference from the control ({row['mean_minus_random']:+.3f}) is within the retraining noise: with "
                        f"{int(row['n_test'])} test examples and the seed spread measured here, only a difference of {detectable:.3f} or more "
                        "would be detected reliably (80% power), so this test is underpowered for it."
                    )
                else:
                    text += f" The difference from the control ({row['mean_minus_random']:+.3f}) exceeds the {detectable:.3f} this test detects reliably against the seed noise."
            out.append(text)
        pos = lo[(lo["method"] == method) & (lo["direction"] == POSITIVE)]
        if len(pos):
            k = pos["levels_off_k"].iloc[0]
            if pd.isna(k):
                out.append(f"{method}: the mean change for the positive removal is still moving at the largest k ({kmax}): it does not level off within this sweep (tolerance {tol:g}% of its range).")
            else:
                out.append(f"{method}: the mean change for the positive removal levels off at k = {int(k)}: after it, it moves by at most {tol:g}% of its range over the sweep.")
    return out


def run(base: common.Base, cfg: Config, overwrite: bool = False, plan_only: bool = False) -> dict[str, Any]:
    exp_dir = base.run.experiment_dir(NAME)
    methods = common.methods_present(base.run)
    removals, specs, plan = build(base, cfg, methods)
    st = retraining_settings(cfg)
    if plan_only:
        seeds = noise.noise_seeds(cfg)
        return {"experiment": NAME, "plan": plan, "also": [f"{NAME}: + {len(seeds)} noise-floor retraining(s) (seeds {', '.join(map(str, seeds))}), shared with lds"] if seeds else []}
    # another method's scores add retrainings; changed scores change a removal, which its sub-run's identity refuses
    common.check_experiment_config(exp_dir, NAME, st, result_settings(cfg), base, cfg.experiment, overwrite, identity=common.retraining_identity(base))
    common.write_table(exp_dir, "plan", plan, PLAN)
    chosen_rows = sorted({i for r in removals for i in r.group.rows})
    chosen = base.selected.iloc[chosen_rows].reset_index(drop=True)
    base_preds = base_predictions(base, exp_dir, chosen)
    subs = common.run_all(specs, base, exp_dir, overwrite, desc=NAME)
    floor = noise.ensure(base, cfg, overwrite)
    return finish(base, cfg, exp_dir, removals, plan, subs, base_preds, floor)


def finish(
    base: common.Base, cfg: Config, exp_dir: Path, removals: list[Removal], plan: pd.DataFrame, subs: dict, base_preds: pd.DataFrame, floor: noise.NoiseFloor
) -> dict[str, Any]:
    st = retraining_settings(cfg)
    tol = cfg.experiment.level_tolerance
    n_removed = dict(zip(plan["sub_run"], plan["n_removed"]))
    changes = changes_table(removals, subs, base_preds, n_removed)
    chosen_uids = sorted(set(changes["test_uid"]))
    floor_summary = noise.summarize(floor.table, st["k_languages"], chosen_uids) if not floor.table.empty else pd.DataFrame(columns=list(noise.NOISE_SUMMARY))
    floor_row = floor.overall(chosen_uids, st["k_languages"])
    faith = faithfulness_table(changes, st["k_languages"], dict(zip(floor_summary["test_lang"], floor_summary["p_sd"])))
    lo = levels_off_table(faith, tol)
    tables = [
        common.write_table(exp_dir, "changes", changes, CHANGES),
        common.write_table(exp_dir, "faithfulness", faith, FAITHFULNESS),
        common.write_table(exp_dir, "levels_off", lo, LEVELS_OFF),
        "plan.parquet",
    ]
    png = common.write_figure(exp_dir, "faithfulness", _figure(faith, lo, floor_row))
    cost = common.cost_summary({**subs, **{f"{noise.NAME}/{k}": v for k, v in floor.subs.items()}}, 0)
    groups = plan["group"].nunique()
    n_test = len(chosen_uids)
    methods = list(dict.fromkeys(r.method for r in removals))
    per_lang = "all selected" if st["k_test_per_lang"] is None else f"up to {st['k_test_per_lang']}"
    grouping_text = {
        "example": "one retraining per test example (the paper's protocol)",
        "language": "one retraining per test language, removing the union of the top-k of its test examples",
        "all": "one retraining for all chosen test examples, removing the union of their top-k",
    }[st["k_grouping"]]
    mean_t = cost["train_seconds_mean"]
    cost_text = (
        f"{len(plan)} retrainings for {len(methods)} method(s) ({', '.join(methods)}): {groups} group(s) x {len(st['ks'])} values of k x "
        f"{len(st['k_directions'])} removals ({', '.join(st['k_directions'])}) per method, identical training sets retrained once, "
        f"plus {len(floor.seeds)} noise-floor retraining(s) shared with lds; grouping '{st['k_grouping']}': {grouping_text}; {n_test} test examples "
        f"({per_lang} per language of {', '.join(st['k_languages'])}, drawn with seed {st['seed']}). Every retraining uses the "
        f"base run's data minus the removed examples and the base run's model, training config and seed: only the data differs."
        + (f" Training took {mean_t:.0f} s per retraining on average here." if mean_t else "")
    )
    readings = [*_readings(faith, lo, tol, floor_row), noise.describe(floor, chosen_uids, st["k_languages"])]
    notes = [
        "The change is P(correct class | retrained final model) - P(correct class | base final model) on the same test example.",
        "The random control removes as many examples as the positive removal of the same method, group and k, drawn from the whole "
        "training set with a seed that does not involve the scores; comparing the two separates the effect of influence from "
        "the effect of retraining on less data (and of retraining noise).",
        f"'Levels off': the smallest k after which the mean change moves by at most {tol:g}% of its range over the sweep (k = 0, change 0 included).",
        "Detectable difference: (1.96 + 0.84) x sqrt(2) x the seed spread of P(correct class) / sqrt(test examples), the paired "
        "difference against the control found 80% of the time at the 5% level when both retrained models carry the seed noise.",
    ]
    fmt = {"flip_pct": _pct, "p_vs_random": pvalue}
    body = [
        section_html.figure(png, "change in the probability of the correct class against k, per method", "Mean change (± std over test examples) in the probability of the correct class after retraining, per method; grey band: the largest mean change from the seed alone; dotted line: where the positive removal levels off."),
        "<h3>Mean change per k (all test examples)</h3>",
        section_html.table(faith[faith["test_lang"] == ALL].drop(columns=["test_lang", "q25_delta", "q75_delta"]), formats=fmt, text_columns=["method"]),
        "<h3>Where the change levels off</h3>",
        section_html.table(lo, formats={"levels_off_k": lambda x: "not within the sweep" if pd.isna(x) else str(int(x))}, text_columns=["method"]),
        "<h3>The noise floor (the same training set, other seeds)</h3>",
        section_html.table(floor_summary, text_columns=["test_lang"]),
        "<details class='more'><summary>Per test language</summary>" + section_html.table(faith[faith["test_lang"] != ALL], formats=fmt, text_columns=["method", "test_lang"]) + "</details>",
        *(section_html.columns_doc(NAME, t, TABLES[t.removesuffix(".parquet")]) for t in tables),
        section_html.columns_doc(NAME, f"../{noise.NAME}/noise_summary.parquet", noise.NOISE_SUMMARY),
    ]
    section = {"readings": readings, "cost": cost_text, "notes": notes, "body": "\n".join(body)}
    return common.write_result(
        exp_dir,
        sys.modules[__name__],
        cfg,
        base,
        section,
        methods=methods,
        n_test=n_test,
        n_groups=int(groups),
        levels_off={
            method: {row["direction"]: (None if pd.isna(row["levels_off_k"]) else int(row["levels_off_k"])) for _, row in lo[lo["method"] == method].iterrows()}
            for method in methods
        },
        mean_delta={
            method: {
                d: {int(k): float(v) for k, v in faith[(faith["method"] == method) & (faith["direction"] == d) & (faith["test_lang"] == ALL)][["k", "mean_delta"]].itertuples(index=False)}
                for d in st["k_directions"]
            }
            for method in methods
        },
        noise_floor=floor_row,
        cost={**cost, "grouping": st["k_grouping"], "note": cost_text},
        tables=tables,
        figures=[f"{common.FIGURES_DIR}/faithfulness.png"],
    )


def _pct(x) -> str:
    from lingtrace.report.html import pct

    return pct(x)
