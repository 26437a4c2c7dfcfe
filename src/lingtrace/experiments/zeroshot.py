"""Zero-shot (paper Fig. 4): retrain without any data of a language l and compare the influence rankings.

For every l of ``experiment.zero_shot_languages`` the model is retrained (base config and seed) on the
base run's training and dev data without their l rows (``data.exclude_lang = l``; the other languages'
examples are exactly the base run's). Influence is recomputed on the zero-shot model for the base run's
selected test examples of l (the same test examples as in the full model). With k = ``experiment.top_k``
(default ``analysis.k``) and, per test example, the full model's top-k F and the zero-shot model's top-k Z
(summed TracIn score; both directions):

(a) ``pct_translations``: % of Z that are translations (same ``translation_id``) of the l examples in F;
    chance: % of the zero-shot training set that are such translations;
(b) ``pct_other_retained``: % of F's examples from other languages that are in Z again; chance: k / |train| %;
(c) the language shares of Z (and of F, for comparison);

and the zero-shot model's accuracy on l (on the whole test pool of l and on the selected examples).
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

from lingtrace import evaluation
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
from lingtrace.report.html import fmt_number, pct
from lingtrace.run import align_uids, read_predictions, read_selection, read_split

log = logging.getLogger(__name__)

NAME = "zero-shot"
TITLE = "Zero-shot: retraining without a language"
REPRODUCES = "Fig. 4"

PER_TEST = {
    "exclude_lang": "the language left out of training (l)",
    "direction": "positive (top-k largest scores) or negative (top-k smallest)",
    "k": "size of the top-k sets",
    "test_uid": "the test example (a selected test example of l in the base run)",
    "n_full_in_language": "entries of the full model's top-k in l",
    "pct_translations": "(a) % of the zero-shot top-k that are translations of those l entries (empty when there are none)",
    "pct_translations_chance": "% of the zero-shot training set that are such translations (empty when there are none)",
    "n_full_other": "entries of the full model's top-k not in l",
    "pct_other_retained": "(b) % of those that are in the zero-shot top-k again (empty when there are none)",
    "pct_other_retained_chance": "k / zero-shot training-set size, in %",
    "p_label_full": "the full model's probability of the gold label",
    "p_label_zero_shot": "the zero-shot model's probability of the gold label",
    "correct_zero_shot": "the zero-shot model predicts the gold label",
}
SUMMARY = {
    "exclude_lang": "the language left out of training (l)",
    "direction": "positive or negative",
    "k": "size of the top-k sets",
    "n_test": "selected test examples of l",
    "n_test_without_in_language": "test examples whose full-model top-k has no l entry (left out of pct_translations)",
    "pct_translations": "(a) mean over test examples of the % of the zero-shot top-k that are translations of the full model's top-k l examples",
    "pct_translations_std": "its standard deviation over test examples",
    "pct_translations_chance": "mean chance level of (a)",
    "pct_other_retained": "(b) mean % of the full model's top-k non-l examples that are top-k again",
    "pct_other_retained_std": "its standard deviation over test examples",
    "pct_other_retained_chance": "chance level of (b): k / zero-shot training-set size, in %",
}
SHARES = {
    "exclude_lang": "the language left out of training (l)",
    "model": "full (the base run) or zero-shot",
    "direction": "positive or negative",
    "train_lang": "training language",
    "share": "(c) mean over l's test examples of the % of their top-k from train_lang",
    "share_std": "its standard deviation",
    "n_test": "test examples",
    "train_fraction": "% of that model's training examples in train_lang (chance level)",
}
ACCURACY = {
    "exclude_lang": "the language left out of training (l)",
    "model": "full or zero-shot",
    "test_lang": "test language, or all",
    "examples": "pool (the whole test pool, data/test.parquet) or selected (the base run's selected test examples of l)",
    "n": "test examples",
    "accuracy": "% predicted correctly",
}
TABLES = {"per_test": PER_TEST, "zero_shot": SUMMARY, "language_shares": SHARES, "accuracy": ACCURACY}


def languages(cfg: Config) -> list[str]:
    return list(cfg.experiment.zero_shot_languages) or list(cfg.data.languages)


def retraining_settings(cfg: Config) -> dict[str, Any]:
    return {"zero_shot_languages": languages(cfg)}


def result_settings(cfg: Config) -> dict[str, Any]:
    return {"top_k": cfg.experiment.top_k or cfg.analysis.k}


def sub_name(lang: str) -> str:
    return f"no-{lang}"


def exclusion(base: Base, lang: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, dev, changed): the base run's training and dev data without ``lang``, and the excluded rows."""
    train = base.train[base.train[schema.LANG].astype(str) != lang].reset_index(drop=True)
    dev = base.dev[base.dev[schema.LANG].astype(str) != lang].reset_index(drop=True)
    parts = []
    for split, frame in (("train", base.train), ("dev", base.dev)):
        out = frame[frame[schema.LANG].astype(str) == lang][schema.EXAMPLE_COLUMNS].copy()
        out["split"] = split
        parts.append(out)
    changed = pd.concat(parts, ignore_index=True)
    changed["change"] = "excluded"
    changed["reason"] = f"zero-shot: every {lang} example is left out of training and dev (data.exclude_lang={lang})"
    return train, dev, changed


def build(base: Base, cfg: Config) -> list[subruns.SubRunSpec]:
    langs = languages(cfg)
    if len(base.languages) < 2:
        raise LingtraceError("zero-shot needs at least two training languages", "add languages to the base run's data.languages")
    specs = []
    for lang in langs:
        selection = base.selected[base.selected[schema.LANG].astype(str) == lang].reset_index(drop=True)
        if selection.empty:
            raise LingtraceError(f"the base run has no selected test example in {lang!r}", "choose experiment.zero_shot_languages among the selected test languages")
        train, dev, changed = exclusion(base, lang)
        sub_cfg = copy.deepcopy(cfg)
        sub_cfg.data.exclude_lang = lang
        k = result_settings(cfg)["top_k"]
        if k >= len(train):
            raise LingtraceError(f"top-k = {k} is not below the {len(train)} training examples left without {lang}", "lower experiment.top_k")
        specs.append(
            subruns.SubRunSpec(
                name=sub_name(lang),
                cfg=sub_cfg,
                change="excluded",
                reason=changed["reason"].iloc[0],
                test_examples=selection,
                eval_frame=base.test_pool,
                influence=True,
                train=train,
                dev=dev,
                test=base.test_pool,
                changed=changed,
                info={"exclude_lang": lang},
            )
        )
    return specs


# ---------------------------------------------------------------- the comparison (pure functions)


def compare(
    full: np.ndarray,
    full_train: pd.DataFrame,
    zero: np.ndarray,
    zero_train: pd.DataFrame,
    lang: str,
    k: int,
    direction: str,
) -> pd.DataFrame:
    """Per test row (rows of ``full`` and ``zero`` are the same test examples): (a), (b) and their chance levels.

    ``full`` [n x |full_train|] and ``zero`` [n x |zero_train|] are summed score matrices whose columns are
    the rows of the training frames.
    """
    largest = direction == "positive"
    ft = top_k(full, k, largest=largest).indices
    zt = top_k(zero, k, largest=largest).indices
    f_lang = full_train[schema.LANG].astype(str).to_numpy()
    f_tid = full_train[schema.TRANSLATION_ID].astype(str).to_numpy()
    f_uid = full_train[schema.UID].astype(str).to_numpy()
    z_tid = zero_train[schema.TRANSLATION_ID].astype(str).to_numpy()
    z_uid = zero_train[schema.UID].astype(str).to_numpy()
    n_zero = len(zero_train)
    rows = []
    for i in range(full.shape[0]):
        fl = f_lang[ft[i]]
        in_lang = ft[i][fl == lang]
        other = ft[i][fl != lang]
        tids = set(f_tid[in_lang])
        z_tids = z_tid[zt[i]]
        if tids:
            a = 100.0 * float(np.isin(z_tids, list(tids)).sum()) / len(zt[i])
            a_chance = 100.0 * float(np.isin(z_tid, list(tids)).sum()) / n_zero
        else:
            a = a_chance = float("nan")
        z_set = set(z_uid[zt[i]])
        b = 100.0 * sum(u in z_set for u in f_uid[other]) / len(other) if len(other) else float("nan")
        rows.append(
            {
                "n_full_in_language": int(len(in_lang)),
                "pct_translations": a,
                "pct_translations_chance": a_chance,
                "n_full_other": int(len(other)),
                "pct_other_retained": b,
                "pct_other_retained_chance": 100.0 * len(zt[i]) / n_zero,
            }
        )
    return pd.DataFrame(rows)


def topk_language_shares(matrix: np.ndarray, train_langs: Sequence[str], k: int, largest: bool, order: Sequence[str]) -> pd.DataFrame:
    """[n_test x len(order)] % of each test row's top-k from each language."""
    idx = top_k(matrix, k, largest=largest).indices
    langs = np.asarray([str(x) for x in train_langs], dtype=object)[idx]
    return pd.DataFrame({lang: 100.0 * (langs == lang).mean(axis=1) for lang in order})


def summary_row(comp: pd.DataFrame, lang: str, direction: str, k: int) -> dict[str, Any]:
    """One row of ``zero_shot.parquet``: (a) and (b) over the test examples of ``compare``'s table ``comp``."""
    a = comp["pct_translations"].dropna()
    return {
        "exclude_lang": lang,
        "direction": direction,
        "k": k,
        "n_test": len(comp),
        "n_test_without_in_language": int(comp["pct_translations"].isna().sum()),
        "pct_translations": float(a.mean()) if len(a) else float("nan"),
        "pct_translations_std": float(a.std(ddof=0)) if len(a) else float("nan"),
        "pct_translations_chance": float(comp["pct_translations_chance"].mean()),
        "pct_other_retained": float(comp["pct_other_retained"].mean()),
        "pct_other_retained_std": float(comp["pct_other_retained"].std(ddof=0)),
        "pct_other_retained_chance": float(comp["pct_other_retained_chance"].mean()),
    }


def language_share_rows(matrix: np.ndarray, train: pd.DataFrame, lang: str, model: str, direction: str, k: int, order: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of ``language_shares.parquet`` for one model's [test x train] scores: (c), the training
    languages' mean share of the top-k, beside their share of that model's training set."""
    langs = train[schema.LANG].astype(str)
    shares = topk_language_shares(matrix, langs.tolist(), k, direction == "positive", order)
    frac = langs.value_counts(normalize=True) * 100.0
    return [
        {
            "exclude_lang": lang,
            "model": model,
            "direction": direction,
            "train_lang": tl,
            "share": float(shares[tl].mean()),
            "share_std": float(shares[tl].std(ddof=0)),
            "n_test": len(shares),
            "train_fraction": float(frac.get(tl, 0.0)),
        }
        for tl in order
    ]


def section_body(pngs: list[tuple[str, str]], summ: pd.DataFrame, acc: pd.DataFrame, shares_df: pd.DataFrame, tables: list[str], k: int) -> list[str]:
    """The section's HTML parts: a figure per left-out language, then the tables and their columns."""
    body = [
        section_html.figure(png, f"zero-shot influence without {lang}", f"Left: language shares of the top-{k} most positively influential examples for the {lang} test examples, full vs zero-shot model. Right: (a) and (b) with their chance levels (black ticks).")
        for lang, png in pngs
    ]
    return body + [
        "<h3>(a) and (b)</h3>",
        section_html.table(summ, formats={c: pct for c in summ.columns if c.startswith("pct_")}, text_columns=["exclude_lang", "direction"]),
        "<h3>Accuracy</h3>",
        section_html.table(acc, formats={"accuracy": pct}, text_columns=["exclude_lang", "model", "test_lang", "examples"]),
        "<details class='more'><summary>(c) language shares of the top-k</summary>"
        + section_html.table(shares_df, formats={"share": pct, "share_std": fmt_number, "train_fraction": pct}, text_columns=["exclude_lang", "model", "direction", "train_lang"])
        + "</details>",
        *(section_html.columns_doc(NAME, t, TABLES[t.removesuffix(".parquet")]) for t in tables),
    ]


def _accuracy_rows(lang: str, model: str, frame: pd.DataFrame, examples: str, order: Sequence[str]) -> list[dict]:
    correct = frame[schema.PRED].to_numpy() == frame[schema.LABEL].to_numpy()
    fl = frame[schema.LANG].astype(str).to_numpy()
    out = []
    for t in [*[x for x in order if (fl == x).any()], ALL]:
        m = np.ones(len(frame), dtype=bool) if t == ALL else fl == t
        out.append({"exclude_lang": lang, "model": model, "test_lang": t, "examples": examples, "n": int(m.sum()), "accuracy": 100.0 * float(correct[m].mean()) if m.any() else float("nan")})
    return out


# ---------------------------------------------------------------- running it


def run(base: Base, cfg: Config, overwrite: bool = False, plan_only: bool = False) -> dict[str, Any]:
    exp_dir = base.run.experiment_dir(NAME)
    specs = build(base, cfg)
    plan = pd.DataFrame(
        [{"sub_run": s.name, "exclude_lang": s.info["exclude_lang"], "n_train": len(s.train), "n_excluded_train": int((s.changed["split"] == "train").sum()), "n_test": len(s.test_examples)} for s in specs]
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
    per_test, summary_rows, share_rows, acc_rows, readings, figures, pngs = [], [], [], [], [], [], []
    full_total = base.total()
    for spec in specs:
        lang = spec.info["exclude_lang"]
        sub = subs[spec.name]
        zs = load_scores(sub)
        zs_train = align_uids(read_split(sub, "train"), zs.train_uids, f"training data of sub-run {sub.root.name}", subruns.STALE_SUB_RUN)
        sel_uids = spec.test_examples[schema.UID].astype(str).tolist()
        pos = {u: i for i, u in enumerate(base.scores.test_uids)}
        zpos = {u: i for i, u in enumerate(zs.test_uids)}
        full = full_total[[pos[u] for u in sel_uids]]
        zero = zs.total()[[zpos[u] for u in sel_uids]]
        zsel = read_selection(sub).set_index(schema.UID).loc[sel_uids]
        fsel = base.selected.set_index(schema.UID).loc[sel_uids]
        for direction in DIRECTIONS:
            comp = compare(full, base.train, zero, zs_train, lang, k, direction)
            comp.insert(0, "test_uid", sel_uids)
            comp.insert(0, "k", k)
            comp.insert(0, "direction", direction)
            comp.insert(0, "exclude_lang", lang)
            comp["p_label_full"] = fsel[schema.CONFIDENCE].to_numpy(dtype=np.float64)
            comp["p_label_zero_shot"] = zsel[evaluation.P_LABEL].to_numpy(dtype=np.float64)
            comp["correct_zero_shot"] = zsel[schema.PRED].to_numpy() == zsel[schema.LABEL].to_numpy()
            per_test.append(comp[list(PER_TEST)])
            summary_rows.append(summary_row(comp, lang, direction, k))
            for model, matrix, train in (("full", full, base.train), ("zero-shot", zero, zs_train)):
                share_rows += language_share_rows(matrix, train, lang, model, direction, k, order)
        if base_pool is not None:
            acc_rows += _accuracy_rows(lang, "full", base_pool, "pool", order)
        acc_rows += _accuracy_rows(lang, "full", base.selected[base.selected[schema.LANG].astype(str) == lang], "selected", order)
        acc_rows += _accuracy_rows(lang, "zero-shot", read_predictions(sub), "pool", order)
        acc_rows += _accuracy_rows(lang, "zero-shot", read_selection(sub), "selected", order)
    per_test_df = pd.concat(per_test, ignore_index=True)
    summ = pd.DataFrame(summary_rows, columns=list(SUMMARY))
    shares_df = pd.DataFrame(share_rows, columns=list(SHARES))
    acc = pd.DataFrame(acc_rows, columns=list(ACCURACY))
    tables = [
        outputs.write_table(exp_dir, "zero_shot", summ, SUMMARY),
        outputs.write_table(exp_dir, "per_test", per_test_df, PER_TEST),
        outputs.write_table(exp_dir, "language_shares", shares_df, SHARES),
        outputs.write_table(exp_dir, "accuracy", acc, ACCURACY),
    ]
    for spec in specs:
        lang = spec.info["exclude_lang"]
        png = outputs.write_figure(exp_dir, f"zero_shot_{lang}", _figure(lang, summ, shares_df, order, k))
        figures.append(f"{outputs.FIGURES_DIR}/zero_shot_{lang}.png")
        pngs.append((lang, png))
        readings.append(_reading(lang, summ, shares_df, acc, k))
    cost = subruns.cost_summary(subs, len(specs))
    n_sel = sum(len(s.test_examples) for s in specs)
    cost_text = (
        f"{len(specs)} retraining(s) (one per left-out language: {', '.join(s.info['exclude_lang'] for s in specs)}) and as many "
        f"influence runs over the left-out language's {n_sel} selected test example(s) in all; every retraining uses the base run's "
        "data without that language and the base run's model, training config and seed: only the data differs."
        + (f" Training took {cost['train_seconds_mean']:.0f} s and influence {cost['influence_seconds_mean']:.0f} s per language on average here." if cost["train_seconds_mean"] and cost["influence_seconds_mean"] else "")
    )
    notes = [
        f"Top-k sets use k = {k} and the summed TracIn score; the test examples are the base run's selected examples of the left-out "
        "language (the zero-shot model may predict some of them wrongly: see the accuracy table).",
        "(a) counts the zero-shot top-k examples whose translation_id is that of an l example in the full model's top-k; (b) counts the "
        "full model's top-k examples from other languages that are again in the zero-shot top-k (same uid).",
    ]
    body = section_body(pngs, summ, acc, shares_df, tables, k)
    section = {"readings": readings, "cost": cost_text, "notes": notes, "body": "\n".join(body)}
    return outputs.write_result(
        exp_dir,
        sys.modules[__name__],
        cfg,
        base,
        section,
        results=summ.to_dict(orient="records"),
        accuracy_zero_shot_on_language={lang: _acc(acc, lang, "zero-shot", "pool", lang) for lang in (s.info["exclude_lang"] for s in specs)},
        accuracy_full_on_language={lang: _acc(acc, lang, "full", "pool", lang) for lang in (s.info["exclude_lang"] for s in specs)},
        cost={**cost, "note": cost_text},
        tables=tables,
        figures=figures,
    )


def _acc(acc: pd.DataFrame, lang: str, model: str, examples: str, test_lang: str) -> float | None:
    m = acc[(acc["exclude_lang"] == lang) & (acc["model"] == model) & (acc["examples"] == examples) & (acc["test_lang"] == test_lang)]
    return float(m["accuracy"].iloc[0]) if len(m) else None


def _reading(lang: str, summ: pd.DataFrame, shares: pd.DataFrame, acc: pd.DataFrame, k: int) -> str:
    row = summ[(summ["exclude_lang"] == lang) & (summ["direction"] == "positive")].iloc[0]
    zs_acc = _acc(acc, lang, "zero-shot", "pool", lang)
    full_acc = _acc(acc, lang, "full", "pool", lang)
    sh = shares[(shares["exclude_lang"] == lang) & (shares["model"] == "zero-shot") & (shares["direction"] == "positive")]
    top = sh.sort_values("share", ascending=False).iloc[0]
    text = f"Trained without any {lang} data, the model predicts {zs_acc:.1f}% of the {lang} test pool correctly" if zs_acc is not None else f"Trained without any {lang} data"
    if full_acc is not None:
        text += f" (full model: {full_acc:.1f}%)"
    a = "no" if pd.isna(row["pct_translations"]) else f"{row['pct_translations']:.1f}%"
    text += (
        f"; of its top-{k} most positively influential examples for the {lang} test examples, {a} are translations of the {lang} "
        f"examples that were top-{k} in the full model (chance {row['pct_translations_chance']:.1f}%), "
        f"{row['pct_other_retained']:.1f}% of the full model's top-{k} from other languages stay top-{k} (chance {row['pct_other_retained_chance']:.1f}%), "
        f"and the largest share comes from {top['train_lang']} ({top['share']:.1f}%; chance {top['train_fraction']:.1f}%)."
    )
    return text


def _figure(lang: str, summ: pd.DataFrame, shares: pd.DataFrame, order: Sequence[str], k: int):
    from lingtrace.report.figures import subplots

    fig, (ax1, ax2) = subplots(1, 2, figsize=(10.0, 3.8))
    sh = shares[(shares["exclude_lang"] == lang) & (shares["direction"] == "positive")]
    x = np.arange(len(order))
    for j, (model, color) in enumerate((("full", "#9bbcd9"), ("zero-shot", "#2b7bba"))):
        vals = sh[sh["model"] == model].set_index("train_lang").reindex(order)["share"].fillna(0.0)
        ax1.bar(x + (j - 0.5) * 0.4, vals.to_numpy(), width=0.4, color=color, label=f"{model} model")
    ax1.set_xticks(x, list(order))
    ax1.set_xlabel("training language")
    ax1.set_ylabel(f"% of the top-{k} (positive)")
    ax1.set_title(f"(c) language shares, {lang} test examples", fontsize=10)
    ax1.legend(fontsize=8)
    s = summ[summ["exclude_lang"] == lang].set_index("direction")
    labels, vals, chance = [], [], []
    for d in DIRECTIONS:
        if d not in s.index:
            continue
        labels += [f"(a) {d}", f"(b) {d}"]
        vals += [s.loc[d, "pct_translations"], s.loc[d, "pct_other_retained"]]
        chance += [s.loc[d, "pct_translations_chance"], s.loc[d, "pct_other_retained_chance"]]
    xx = np.arange(len(labels))
    ax2.bar(xx, np.nan_to_num(np.asarray(vals, dtype=float)), color=["#2b7bba", "#7fb3dd", "#c0392b", "#e39a91"][: len(labels)])
    ax2.scatter(xx, chance, marker="_", s=400, color="black", label="chance", zorder=3)
    ax2.set_xticks(xx, labels, fontsize=8)
    ax2.set_ylabel("%")
    ax2.set_title(f"(a) translations of the full model's {lang} top-{k}; (b) other-language top-{k} kept", fontsize=9)
    ax2.legend(fontsize=8)
    return fig
