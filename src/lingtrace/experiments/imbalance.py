"""Data imbalance (paper Fig. 5): retrain with extra data of a language l and follow the in-language share.

For every l of ``experiment.imbalance_languages`` and p of ``experiment.imbalance_pcts`` the model is
retrained (base config and seed) with ``data.extra_lang = l`` and ``data.extra_pct = p``: the ``prepare``
stage adds ``round(p / 100 * data.train_per_lang)`` examples of l from its unused pool on top of the
base run's unchanged sample. The sub-run checks that its data is exactly the base run's plus those
examples (all in l, none in the base training set, no translation id shared with dev or test, dev and
test unchanged) and records them in ``data/changed.parquet``. Influence is recomputed for the base run's
selected test examples; p = 0 is the base run itself. Reported: the in-language share of every test
example's top-k (k = ``experiment.top_k``, default ``analysis.k``; summed score), positive and negative,
against p, with the chance level (the share of the test language in that training set).
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lingtrace.analysis.common import ALL, DIRECTIONS
from lingtrace.analysis.topk import top_k
from lingtrace.config import Config
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.experiments import html as section_html
from lingtrace.experiments import outputs, subruns
from lingtrace.experiments.base import Base
from lingtrace.experiments.identity import check_experiment_config
from lingtrace.influence.store import load_scores
from lingtrace.prepare.sampling import extra_count
from lingtrace.report.html import pct
from lingtrace.run import RunDir, align_uids, frame_hash, read_predictions, read_selection, read_split

log = logging.getLogger(__name__)

NAME = "imbalance"
TITLE = "Data imbalance: extra training data for one language"
REPRODUCES = "Fig. 5"

SHARE = {
    "extra_lang": "the language given extra training data (l)",
    "pct": "extra data in % of data.train_per_lang (0 = the base run)",
    "n_extra": "extra training examples of l",
    "n_train": "training examples in all",
    "direction": "positive (top-k largest scores) or negative (top-k smallest)",
    "test_lang": "test language, or all",
    "n_test": "test examples",
    "share": "mean over the test examples of the % of their top-k in their own language (in-language share)",
    "share_std": "its standard deviation",
    "train_fraction": "% of the training examples in the test example's language (chance level; mean over the test examples)",
    "extra_lang_share": "mean % of the top-k in the extra language l",
    "extra_lang_fraction": "% of the training examples in l (chance level of extra_lang_share)",
}
ACCURACY = {
    "extra_lang": "the language given extra training data (l)",
    "pct": "extra data in % of data.train_per_lang (0 = the base run)",
    "test_lang": "test language, or all",
    "n": "test examples (the whole test pool, data/test.parquet)",
    "accuracy": "% predicted correctly by that run's final model",
}
TABLES = {"in_language_share": SHARE, "accuracy": ACCURACY}


def languages(cfg: Config) -> list[str]:
    return list(cfg.experiment.imbalance_languages) or list(cfg.data.languages)


def pcts(cfg: Config) -> list[float]:
    return sorted({float(p) for p in cfg.experiment.imbalance_pcts})


def retraining_settings(cfg: Config) -> dict[str, Any]:
    return {"imbalance_languages": languages(cfg), "imbalance_pcts": pcts(cfg)}


def result_settings(cfg: Config) -> dict[str, Any]:
    return {"top_k": cfg.experiment.top_k or cfg.analysis.k}


def sub_name(lang: str, pct: float) -> str:
    return f"extra-{lang}-p{pct:g}"


def added_examples(base_train: pd.DataFrame, base_dev: pd.DataFrame, base_test: pd.DataFrame, sub: RunDir, lang: str, n_extra: int) -> pd.DataFrame:
    """The examples the sub-run's ``prepare`` added, after checking that nothing else changed."""

    def fail(what: str) -> LingtraceError:
        return LingtraceError(
            f"imbalance sub-run {sub.root.name}: {what}",
            "the data sampling no longer keeps the base sample when data.extra_lang is set; report this",
        )

    train = read_split(sub, "train")
    dev = read_split(sub, "dev")
    test = read_split(sub, "test")
    cols = schema.EXAMPLE_COLUMNS
    base_idx = base_train[cols].astype(str).set_index(schema.UID)
    sub_idx = train[cols].astype(str).set_index(schema.UID)
    missing = base_idx.index.difference(sub_idx.index)
    if len(missing):
        raise fail(f"{len(missing)} base training examples are missing (e.g. {missing[0]!r})")
    if not sub_idx.loc[base_idx.index].equals(base_idx):
        raise fail("base training examples differ in content")
    added = train[~train[schema.UID].astype(str).isin(base_idx.index)]
    if len(added) != n_extra:
        raise fail(f"{len(added)} examples were added, expected {n_extra}")
    if (added[schema.LANG].astype(str) != lang).any():
        raise fail(f"added examples are not all in {lang}")
    for name, ours, theirs in (("dev", dev, base_dev), ("test", test, base_test)):
        if frame_hash(ours.sort_values(schema.UID)) != frame_hash(theirs.sort_values(schema.UID)):
            raise fail(f"the {name} data differs from the base run's")
    leak = set(added[schema.TRANSLATION_ID].astype(str)) & (set(base_dev[schema.TRANSLATION_ID].astype(str)) | set(base_test[schema.TRANSLATION_ID].astype(str)))
    if leak:
        raise fail(f"added examples share translation ids with dev/test (e.g. {sorted(leak)[0]!r})")
    out = added[cols].reset_index(drop=True).copy()
    out["split"] = "train"
    out["change"] = "added"
    return out


def build(base: Base, cfg: Config) -> list[subruns.SubRunSpec]:
    specs = []
    k = result_settings(cfg)["top_k"]
    if k >= len(base.train):
        raise LingtraceError(f"top-k = {k} is not below the base run's {len(base.train)} training examples", "lower experiment.top_k")
    for lang in languages(cfg):
        for p in pcts(cfg):
            sub_cfg = copy.deepcopy(cfg)
            sub_cfg.data.extra_lang = lang
            sub_cfg.data.extra_pct = p
            n_extra = extra_count(sub_cfg.data)
            if n_extra < 1:
                raise LingtraceError(f"extra_pct={p:g} of data.train_per_lang={cfg.data.train_per_lang} adds no example", "choose larger experiment.imbalance_pcts")
            reason = f"imbalance: {n_extra} extra {lang} training examples ({p:g}% of data.train_per_lang) from the unused pool (data.extra_lang={lang}, data.extra_pct={p:g})"

            def verify(sub: RunDir, lang=lang, n_extra=n_extra, reason=reason) -> pd.DataFrame:
                out = added_examples(base.train, base.dev, base.test_pool, sub, lang, n_extra)
                out["reason"] = reason
                return out

            specs.append(
                subruns.SubRunSpec(
                    name=sub_name(lang, p),
                    cfg=sub_cfg,
                    change="added",
                    reason=reason,
                    test_examples=base.selected,
                    eval_frame=base.test_pool,
                    influence=True,
                    verify=verify,
                    info={"extra_lang": lang, "extra_pct": p, "n_extra": n_extra},
                )
            )
    return specs


# ---------------------------------------------------------------- shares (pure functions)


def share_rows(matrix: np.ndarray, test: pd.DataFrame, train: pd.DataFrame, k: int, extra_lang: str, order: Sequence[str]) -> list[dict]:
    """In-language and extra-language shares of every test row's top-k, aggregated per test language and over all."""
    t_lang = test[schema.LANG].astype(str).to_numpy()
    tr_lang = train[schema.LANG].astype(str).to_numpy()
    frac = {lang: 100.0 * float((tr_lang == lang).mean()) for lang in set(tr_lang) | set(t_lang)}
    out = []
    for direction in DIRECTIONS:
        idx = top_k(matrix, k, largest=direction == "positive").indices
        langs = tr_lang[idx]
        own = 100.0 * (langs == t_lang[:, None]).mean(axis=1)
        extra = 100.0 * (langs == extra_lang).mean(axis=1)
        chance = np.asarray([frac[x] for x in t_lang])
        for tl in [*[x for x in order if (t_lang == x).any()], ALL]:
            m = np.ones(len(t_lang), dtype=bool) if tl == ALL else t_lang == tl
            out.append(
                {
                    "direction": direction,
                    "test_lang": tl,
                    "n_test": int(m.sum()),
                    "share": float(own[m].mean()),
                    "share_std": float(own[m].std()),
                    "train_fraction": float(chance[m].mean()),
                    "extra_lang_share": float(extra[m].mean()),
                    "extra_lang_fraction": frac.get(extra_lang, 0.0),
                }
            )
    return out


def _accuracy(frame: pd.DataFrame, order: Sequence[str]) -> list[dict]:
    correct = frame[schema.PRED].to_numpy() == frame[schema.LABEL].to_numpy()
    fl = frame[schema.LANG].astype(str).to_numpy()
    out = []
    for t in [*[x for x in order if (fl == x).any()], ALL]:
        m = np.ones(len(frame), dtype=bool) if t == ALL else fl == t
        out.append({"test_lang": t, "n": int(m.sum()), "accuracy": 100.0 * float(correct[m].mean())})
    return out


# ---------------------------------------------------------------- running it


def run(base: Base, cfg: Config, overwrite: bool = False, plan_only: bool = False) -> dict[str, Any]:
    exp_dir = base.run.experiment_dir(NAME)
    specs = build(base, cfg)
    plan = pd.DataFrame(
        [{"sub_run": s.name, "extra_lang": s.info["extra_lang"], "pct": s.info["extra_pct"], "n_extra": s.info["n_extra"], "n_train": len(base.train) + s.info["n_extra"], "n_test": len(s.test_examples)} for s in specs]
    )
    if plan_only:
        return {"experiment": NAME, "plan": plan}
    check_experiment_config(exp_dir, NAME, retraining_settings(cfg), result_settings(cfg), base, cfg.experiment, overwrite)
    subs = subruns.run_all(specs, base, exp_dir, overwrite, desc=NAME)
    return finish(base, cfg, exp_dir, specs, subs)


def finish(base: Base, cfg: Config, exp_dir: Path, specs: list[subruns.SubRunSpec], subs: dict) -> dict[str, Any]:
    k = result_settings(cfg)["top_k"]
    order = list(base.languages)
    base_pool = read_predictions(base.run) if base.run.predictions_path.exists() else None
    rows, acc_rows = [], []
    langs = list(dict.fromkeys(s.info["extra_lang"] for s in specs))
    base_total = base.total()
    for lang in langs:
        for r in share_rows(base_total, base.selected, base.train, k, lang, order):
            rows.append({"extra_lang": lang, "pct": 0.0, "n_extra": 0, "n_train": len(base.train), **r})
        if base_pool is not None:
            acc_rows += [{"extra_lang": lang, "pct": 0.0, **r} for r in _accuracy(base_pool, order)]
    for spec in specs:
        sub = subs[spec.name]
        lang, p = spec.info["extra_lang"], spec.info["extra_pct"]
        scores = load_scores(sub)
        train = align_uids(read_split(sub, "train"), scores.train_uids, f"training data of sub-run {sub.root.name}", subruns.STALE_SUB_RUN)
        test = align_uids(read_selection(sub), scores.test_uids, f"test examples of sub-run {sub.root.name}", subruns.STALE_SUB_RUN)
        for r in share_rows(scores.total(), test, train, k, lang, order):
            rows.append({"extra_lang": lang, "pct": p, "n_extra": spec.info["n_extra"], "n_train": len(train), **r})
        acc_rows += [{"extra_lang": lang, "pct": p, **r} for r in _accuracy(read_predictions(sub), order)]
    share = pd.DataFrame(rows, columns=list(SHARE)).sort_values(["extra_lang", "pct"], kind="stable").reset_index(drop=True)
    acc = pd.DataFrame(acc_rows, columns=list(ACCURACY)).sort_values(["extra_lang", "pct"], kind="stable").reset_index(drop=True)
    tables = [outputs.write_table(exp_dir, "in_language_share", share, SHARE), outputs.write_table(exp_dir, "accuracy", acc, ACCURACY)]
    figures, body, readings = [], [], []
    for lang in langs:
        png = outputs.write_figure(exp_dir, f"imbalance_{lang}", _figure(share, lang, k))
        figures.append(f"{outputs.FIGURES_DIR}/imbalance_{lang}.png")
        body.append(section_html.figure(png, f"in-language share against extra {lang} data", f"In-language share of the top-{k} of the {lang} test examples against the extra {lang} data; dashed: chance (the share of {lang} in the training set)."))
        readings.append(_reading(share, acc, lang, k))
    view = share[share["test_lang"].isin([*langs, ALL])]
    body += [
        "<h3>In-language share of the top-k</h3>",
        section_html.table(view, formats={c: pct for c in ("share", "train_fraction", "extra_lang_share", "extra_lang_fraction")}, text_columns=["extra_lang", "direction", "test_lang"]),
        "<h3>Accuracy on the test pool</h3>",
        section_html.table(acc[acc["test_lang"].isin([*langs, ALL])], formats={"accuracy": pct}, text_columns=["extra_lang", "test_lang"]),
        "<details class='more'><summary>Every test language</summary>" + section_html.table(share, formats={c: pct for c in ("share", "train_fraction", "extra_lang_share", "extra_lang_fraction")}, text_columns=["extra_lang", "direction", "test_lang"]) + "</details>",
        *(section_html.columns_doc(NAME, t, TABLES[t.removesuffix(".parquet")]) for t in tables),
    ]
    cost = subruns.cost_summary(subs, len(specs))
    cost_text = (
        f"{len(specs)} retraining(s) and influence runs ({len(langs)} language(s) x {len(pcts(cfg))} percentages: "
        f"{', '.join(f'{p:g}%' for p in pcts(cfg))}; p = 0 is the base run), each over the base run's {len(base.selected)} selected test "
        "examples; every retraining uses the base run's data plus the extra examples and the base run's model, training config and seed: "
        "only the data differs."
        + (f" Training took {cost['train_seconds_mean']:.0f} s and influence {cost['influence_seconds_mean']:.0f} s per retraining on average here." if cost["train_seconds_mean"] and cost["influence_seconds_mean"] else "")
    )
    notes = [f"Top-k sets use k = {k} and the summed TracIn score; the test examples are the base run's selected examples in every run."]
    section = {"readings": readings, "cost": cost_text, "notes": notes, "body": "\n".join(body)}
    return outputs.write_result(
        exp_dir,
        sys.modules[__name__],
        cfg,
        base,
        section,
        in_language_share={
            lang: {
                d: {f"{p:g}": float(v) for p, v in share[(share["extra_lang"] == lang) & (share["test_lang"] == lang) & (share["direction"] == d)][["pct", "share"]].itertuples(index=False)}
                for d in DIRECTIONS
            }
            for lang in langs
        },
        cost={**cost, "note": cost_text},
        tables=tables,
        figures=figures,
    )


def _reading(share: pd.DataFrame, acc: pd.DataFrame, lang: str, k: int) -> str:
    s = share[(share["extra_lang"] == lang) & (share["test_lang"] == lang)]
    pos = s[s["direction"] == "positive"].sort_values("pct")
    neg = s[s["direction"] == "negative"].sort_values("pct")
    lo, hi = pos.iloc[0], pos.iloc[-1]
    text = (
        f"With {hi['pct']:g}% extra {lang} training data, the in-language share of the top-{k} most positively influential examples of "
        f"the {lang} test examples goes from {lo['share']:.1f}% (base run) to {hi['share']:.1f}% (chance: {lo['train_fraction']:.1f}% to {hi['train_fraction']:.1f}%)"
    )
    if len(neg):
        text += f", and of the most negatively influential from {neg.iloc[0]['share']:.1f}% to {neg.iloc[-1]['share']:.1f}%"
    a = acc[(acc["extra_lang"] == lang) & (acc["test_lang"] == lang)].sort_values("pct")
    if len(a) >= 2:
        text += f"; accuracy on {lang} goes from {a.iloc[0]['accuracy']:.1f}% to {a.iloc[-1]['accuracy']:.1f}%"
    return text + "."


def _figure(share: pd.DataFrame, lang: str, k: int):
    from lingtrace.report.figures import subplots

    fig, ax = subplots(figsize=(6.4, 4.0))
    s = share[(share["extra_lang"] == lang) & (share["test_lang"] == lang)]
    for d, color in (("positive", "#2b7bba"), ("negative", "#c0392b")):
        sub = s[s["direction"] == d].sort_values("pct")
        ax.errorbar(sub["pct"], sub["share"], yerr=sub["share_std"], marker="o", capsize=3, color=color, label=f"top-{k} {d}")
    chance = s[s["direction"] == "positive"].sort_values("pct")
    ax.plot(chance["pct"], chance["train_fraction"], linestyle="--", color="black", linewidth=1, label="chance")
    ax.set_xticks(sorted(s["pct"].unique()))
    ax.set_xlabel(f"extra {lang} training data (% of train_per_lang)")
    ax.set_ylabel(f"% of the top-{k} in {lang} (mean ± std)")
    ax.set_title(f"In-language share of the {lang} test examples' top-{k}", fontsize=10)
    ax.legend(fontsize=8)
    return fig
