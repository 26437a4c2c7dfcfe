"""The languages experiment: its name, its title in the report, and the settings its retrainings and
results depend on."""

from __future__ import annotations

from typing import Any

from lingtrace.config import Config

NAME = "languages"
TITLE = "What happens when a language's data is removed?"
REPRODUCES = "Fig. 2 checked by retraining (not in the paper)"
LEAVE_ONE_OUT = "leave-one-out"
MIXTURE = "mixture"
#: the predictors of the effect of removing a language, per method
SUMMED = "summed scores"
SHARE = "top-k share"
PREDICTORS = (SUMMED, SHARE)


def design(cfg: Config) -> str:
    return str(cfg.experiment.languages_design)


def removed_languages(cfg: Config) -> list[str]:
    """The training languages removed (leave-one-out) or varied (mixture), in data.languages order."""
    chosen = list(cfg.experiment.languages_removed) or list(cfg.data.languages)
    return [lang for lang in cfg.data.languages if lang in chosen]


def top_k(cfg: Config) -> int:
    return int(cfg.experiment.top_k or cfg.analysis.k)


def retraining_settings(cfg: Config) -> dict[str, Any]:
    """What the retrainings depend on (a change is refused unless --overwrite). Leave-one-out: only the
    design (more or fewer removed languages add or reuse retrainings); mixture: the varied languages, the
    lowest fraction and the seed, which decide every mixture's training set (more mixtures add)."""
    if design(cfg) == MIXTURE:
        x = cfg.experiment
        return {"languages_design": MIXTURE, "languages_varied": removed_languages(cfg), "languages_min_fraction": float(x.languages_min_fraction), "seed": int(x.seed)}
    return {"languages_design": LEAVE_ONE_OUT}


def result_settings(cfg: Config) -> dict[str, Any]:
    x = cfg.experiment
    out: dict[str, Any] = {"top_k": top_k(cfg), "lds_resamples": int(x.lds_resamples), "noise_seeds": int(x.noise_seeds)}
    if design(cfg) == MIXTURE:
        out["languages_mixtures"] = int(x.languages_mixtures)
    else:
        out.update(languages_removed=removed_languages(cfg), seed=int(x.seed))
    return out
