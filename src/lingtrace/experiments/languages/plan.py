"""The retrainings of the languages experiment: one per removed language (leave-one-out) or one per
mixture, each a sub-run ``RUN/experiments/languages/runs/SUB/`` that keeps only what the experiment reads
(its training data and the final model's predictions on the selected test examples; no influence, the
checkpoints pruned), and the noise-floor retrainings shared with ``lds`` and ``k-selection``.

Leave-one-out reuses the zero-shot experiment's retraining without the same language
(``RUN/experiments/zero-shot/runs/no-XX``) when it is complete and is the same retraining: the same
training and dev data, the same data/model/train config, and predictions (of the whole test pool) that
hold every selected test example. Its own sub-run, once made, is preferred.
"""

from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lingtrace import evaluation
from lingtrace.config import Config
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.experiments import noise, subruns, zeroshot
from lingtrace.experiments.base import Base
from lingtrace.experiments.languages.columns import PLAN
from lingtrace.experiments.languages.settings import LEAVE_ONE_OUT, MIXTURE, NAME, design, removed_languages
from lingtrace.io import read_json
from lingtrace.run import STAGES, RunDir, frame_hash, read_predictions, read_split


@dataclass
class Plan:
    """The retrainings: specs to run (own sub-runs), zero-shot sub-runs reused (by the name of the sub-run they
    stand for), the plan table and, for the mixture design, the drawn fractions [mixtures x varied languages]."""

    design: str
    languages: list[str]
    specs: list[subruns.SubRunSpec]
    reused: dict[str, RunDir]
    table: pd.DataFrame
    fractions: np.ndarray | None = None
    names: list[str] = field(default_factory=list)  # every retraining's sub-run name, in order
    location: dict[str, str] = field(default_factory=dict)  # sub-run name -> its directory under experiments/


def loo_name(lang: str) -> str:
    return f"no-{lang}"


def mixture_name(j: int) -> str:
    return f"mix-{j:03d}"


def _base_train(base: Base) -> pd.DataFrame:
    return read_split(base.run, "train", f"rerun `lingtrace prepare {base.run.root} --overwrite` and the stages after it")


# ---------------------------------------------------------------- leave-one-out


def loo_spec(base: Base, cfg: Config, lang: str) -> subruns.SubRunSpec:
    """The retraining without ``lang``: the zero-shot change (``data.exclude_lang``: training and dev), evaluated
    on every selected test example."""
    train, dev, changed = zeroshot.exclusion(base, lang)
    sub_cfg = copy.deepcopy(cfg)
    sub_cfg.data.exclude_lang = lang
    reason = f"languages (leave-one-out): every {lang} example is left out of training and dev (data.exclude_lang={lang})"
    return subruns.SubRunSpec(
        name=loo_name(lang),
        cfg=sub_cfg,
        change="excluded",
        reason=reason,
        test_examples=base.selected,
        eval_frame=base.selected,
        influence=False,
        train=train,
        dev=dev,
        test=base.test_pool,
        changed=changed.assign(reason=reason),
        info={"exclude_lang": lang},
    )


def reusable_zero_shot(base: Base, spec: subruns.SubRunSpec) -> RunDir | None:
    """The zero-shot experiment's sub-run without the same language, when it is complete and the same retraining
    (training and dev data, the data/model/train config) with predictions on every selected test example."""
    lang = spec.info["exclude_lang"]
    sub = RunDir(base.run.sub_runs_dir(zeroshot.NAME) / zeroshot.sub_name(lang))
    try:
        if not (sub.sub_run_record.is_file() and sub.is_complete("train") and sub.is_complete("select")):
            return None
        if read_json(sub.sub_run_record).get("exclude_lang") != lang:
            return None
        if frame_hash(read_split(sub, "train")) != frame_hash(spec.train) or frame_hash(read_split(sub, "dev")) != frame_hash(spec.dev):
            return None
        sections = STAGES["train"]
        if sub.load_config().fingerprint_view(sections) != spec.cfg.fingerprint_view(sections):
            return None
        preds = read_predictions(sub)
    except (OSError, ValueError, KeyError, LingtraceError):
        return None
    if evaluation.MARGIN not in preds.columns or not set(base.selected[schema.UID].astype(str)) <= set(preds[schema.UID].astype(str)):
        return None
    return sub


# ---------------------------------------------------------------- mixtures


def draw_mixture(train_langs: np.ndarray, languages: list[str], j: int, min_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fractions [len(languages)], kept mask over the training rows) of mixture ``j``: for each varied
    language Y, a fraction uniform in [min_fraction, 1] and a random subset of round(fraction * n_Y) (at least
    1) of Y's training rows, both from the seed (seed, "languages-mixture", j, Y) alone; the other languages
    are kept whole. A larger number of mixtures keeps the earlier ones."""
    keep = np.ones(len(train_langs), dtype=bool)
    fractions = np.zeros(len(languages))
    for i, lang in enumerate(languages):
        rows = np.flatnonzero(train_langs == lang)
        rng = np.random.default_rng([int(seed) % 2**32, zlib.crc32(b"languages-mixture"), int(j), zlib.crc32(lang.encode())])
        fractions[i] = rng.uniform(min_fraction, 1.0)
        size = max(1, int(round(fractions[i] * len(rows))))
        kept = rng.choice(len(rows), size=min(size, len(rows)), replace=False)
        keep[rows] = False
        keep[rows[kept]] = True
    return fractions, keep


def mixture_spec(base: Base, cfg: Config, train: pd.DataFrame, j: int, fractions: np.ndarray, keep: np.ndarray, languages: list[str]) -> subruns.SubRunSpec:
    langs = train[schema.LANG].astype(str).to_numpy()
    n_kept = {lang: int((keep & (langs == lang)).sum()) for lang in languages}
    drawn = ", ".join(f"{lang} {f:.3f} ({n_kept[lang]} of {int((langs == lang).sum())})" for lang, f in zip(languages, fractions))
    reason = (
        f"languages (mixture {j}): a random fraction of every varied language kept, drawn with seed "
        f"({cfg.experiment.seed}, 'languages-mixture', {j}, language): {drawn}; the others left out"
    )
    info = {"mixture": j, "fractions": {lang: float(f) for lang, f in zip(languages, fractions)}, "n_kept": n_kept}
    return subruns.SubRunSpec.kept_subset(base, cfg, train, mixture_name(j), keep, reason, info)


# ---------------------------------------------------------------- the plan


def build(base: Base, cfg: Config) -> Plan:
    """The plan of ``cfg``'s design, with the noise-floor rows; one-line errors for a plan that cannot work."""
    x = cfg.experiment
    languages = removed_languages(cfg)
    train_langs = set(base.train[schema.LANG].astype(str))
    missing = [lang for lang in languages if lang not in train_langs]
    if missing:
        raise LingtraceError(f"the base run has no training example in {missing[0]!r}", "choose experiment.languages_removed among the training languages")
    if len(languages) < 2:
        raise LingtraceError(
            f"the languages experiment compares at least two training languages, got {languages}",
            "set experiment.languages_removed to two or more languages (empty = all of data.languages)",
        )
    rows, specs, reused, location = [], [], {}, {}
    kind = design(cfg)
    fractions = None
    if kind == LEAVE_ONE_OUT:
        for lang in languages:
            spec = loo_spec(base, cfg, lang)
            own = base.run.sub_runs_dir(NAME) / spec.name
            zs = None if own.exists() else reusable_zero_shot(base, spec)
            if zs is not None:
                reused[spec.name] = zs
                location[spec.name] = f"{zeroshot.NAME}/runs/{zs.root.name}"
            else:
                specs.append(spec)
                location[spec.name] = f"{NAME}/runs/{spec.name}"
            rows.append(
                {
                    "sub_run": location[spec.name],
                    "design": kind,
                    "purpose": LEAVE_ONE_OUT,
                    "removed_lang": lang,
                    "reused_from": zeroshot.NAME if zs is not None else "",
                    "train_seed": int(cfg.train.seed),
                    "n_train": len(spec.train),
                    "n_removed": int((spec.changed["split"] == "train").sum()),
                }
            )
        names = [loo_name(lang) for lang in languages]
    else:
        m = int(x.languages_mixtures)
        if m < len(languages) + 2:
            raise LingtraceError(
                f"experiment.languages_mixtures={m} cannot fit {len(languages)} language coefficients, an intercept and their standard errors",
                f"set experiment.languages_mixtures to at least {len(languages) + 2}",
            )
        train = _base_train(base)
        langs = train[schema.LANG].astype(str).to_numpy()
        draws = [draw_mixture(langs, languages, j, float(x.languages_min_fraction), int(x.seed)) for j in range(m)]
        fractions = np.vstack([f for f, _ in draws])
        for j, (f, keep) in enumerate(draws):
            spec = mixture_spec(base, cfg, train, j, f, keep, languages)
            specs.append(spec)
            location[spec.name] = f"{NAME}/runs/{spec.name}"
            rows.append(
                {
                    "sub_run": location[spec.name],
                    "design": kind,
                    "purpose": MIXTURE,
                    "removed_lang": "",
                    "reused_from": "",
                    "train_seed": int(cfg.train.seed),
                    "n_train": int(keep.sum()),
                    "n_removed": int((~keep).sum()),
                }
            )
        names = [mixture_name(j) for j in range(m)]
    rows += [{**r, "design": kind, "removed_lang": "", "reused_from": ""} for r in noise.plan_rows(cfg, len(base.train))]
    return Plan(kind, languages, specs, reused, pd.DataFrame(rows, columns=list(PLAN)), fractions, names, location)


def describe_reuse(plan: Plan) -> list[str]:
    return [f"{NAME}: {name} reuses {plan.location[name]} (the zero-shot experiment's identical retraining)" for name in plan.reused]
