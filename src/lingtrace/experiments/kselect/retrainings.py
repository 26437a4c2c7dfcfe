"""k-selection's retrainings: a sub-run per planned removal (``build``), the base model's predictions
on the chosen test examples, and the change each retraining made to them (``changes_table``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lingtrace import evaluation
from lingtrace.analysis.common import POSITIVE
from lingtrace.config import Config
from lingtrace.config.influence import DEFAULT_METHOD
from lingtrace.data import schema
from lingtrace.errors import LingtraceError
from lingtrace.experiments import outputs, subruns
from lingtrace.experiments.base import Base
from lingtrace.experiments.kselect.columns import CHANGES, PLAN
from lingtrace.experiments.kselect.plan import (
    Removal,
    choose_tests,
    make_groups,
    plan_removals,
    share_identical,
)
from lingtrace.experiments.kselect.settings import RANDOM, retraining_settings
from lingtrace.io import write_parquet
from lingtrace.run import read_selection


def _changed_frame(base: Base, r: Removal, reason: str) -> pd.DataFrame:
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


def build(base: Base, cfg: Config, methods: Sequence[str] = (DEFAULT_METHOD,)) -> tuple[list[Removal], list[subruns.SubRunSpec], pd.DataFrame]:
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
            subruns.SubRunSpec(
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


def base_predictions(base: Base, exp_dir: Path, chosen: pd.DataFrame) -> pd.DataFrame:
    """The base final model's predictions on the chosen test examples (computed once, like the sub-runs')."""
    path = exp_dir / outputs.BASE_PREDICTIONS
    if path.exists():
        old = pd.read_parquet(path)
        if set(old[schema.UID]) >= set(chosen[schema.UID]):
            return old
    preds = evaluation.predict_frame(base.run, base.cfg, chosen[schema.EXAMPLE_COLUMNS])
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
                    "p_base": bp.loc[uids, evaluation.P_LABEL].to_numpy(dtype=np.float64),
                    "p_retrained": sel[evaluation.P_LABEL].to_numpy(dtype=np.float64),
                    "pred_retrained": sel[schema.PRED].to_numpy(dtype=np.int64),
                }
            )
        )
    out = pd.concat(parts, ignore_index=True)
    out["delta"] = out["p_retrained"] - out["p_base"]
    out["flipped"] = out["pred_retrained"] != out["label"]
    return out[list(CHANGES)]
