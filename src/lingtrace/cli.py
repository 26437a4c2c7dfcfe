"""Command line: ``lingtrace demo | run | prepare | train | select | influence | analyze | report | import | experiment | config``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from lingtrace import __version__
from lingtrace.config import Config, apply_overrides, help_keys, load_config, preset, validate
from lingtrace.errors import LingtraceError
from lingtrace.io import read_json
from lingtrace.run import STAGES, RunDir, majority_class_warning
from lingtrace.stages import PIPELINE

log = logging.getLogger("lingtrace")

DEMO_STAGES = [stage.name for stage in PIPELINE]


def _add_common(p: argparse.ArgumentParser, run_arg: bool = True) -> None:
    if run_arg:
        p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--config", metavar="YAML", help="config file (a new run; an existing run uses its config.json)")
    p.add_argument("--preset", choices=sorted(_presets()), help="start from a preset: xnli, pawsx, marc (paper settings); emoji (embedded, the demo's default: the e5 encoder); emoji-llm (embedded: the SmolLM2 decoder)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[], help="override a config key, e.g. --set train.lr=1e-5 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="recompute stages whose outputs were made with a different config")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


#: influence options that get a short alias besides --NAME (``--method tracin --method trak``)
INFLUENCE_ALIASES = {"methods": "--method"}


def _influence_fields():
    import dataclasses

    from lingtrace.config.influence import InfluenceOptions

    return dataclasses.fields(InfluenceOptions)


def _add_influence_options(p: argparse.ArgumentParser) -> None:
    """One flag per ``InfluenceOptions`` field, from its metadata (help text, choices): an option is defined once."""
    g = p.add_argument_group("influence options (shortcuts for --set influence.KEY=VALUE)")
    for f in _influence_fields():
        flags = [INFLUENCE_ALIASES[f.name]] if f.name in INFLUENCE_ALIASES else []
        flags.append("--" + f.name.replace("_", "-"))
        dest = f"influence_{f.name}"
        helptext = f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        kind = str(f.type)
        if kind == "bool":
            g.add_argument(*flags, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        elif kind.startswith("list"):
            extra = f" (comma-separated or repeated; one of: {', '.join(choices)})" if choices else " (comma-separated or repeated)"
            g.add_argument(*flags, dest=dest, action="append", metavar="VALUES", help=helptext + extra)
        else:
            g.add_argument(*flags, dest=dest, choices=list(choices) if choices else None, metavar=None if choices else "VALUE", help=helptext)


#: the config sections whose keys each command takes as flags (``--train-lr 1e-5`` for ``--set train.lr=1e-5``),
#: generated from the config dataclasses' field metadata like the influence options
SECTION_FLAGS: dict[str, tuple[str, ...]] = {
    "prepare": ("data",),
    "train": ("model", "train"),
    "select": ("select",),
    "analyze": ("analysis",),
    "run": ("data", "model", "train", "select", "analysis"),
}


def _section_fields(section: str) -> list[tuple[str, object, object]]:
    """(name, field, type) of every key of config section ``section`` that a flag can set (mappings cannot)."""
    import dataclasses
    import types
    import typing

    from lingtrace.config import Config

    cls = typing.get_type_hints(Config)[section]
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        if typing.get_origin(tp) is dict or tp is dict:
            continue
        out.append((f.name, f, tp))
    return out


def _add_section_options(p: argparse.ArgumentParser, command: str) -> None:
    """One flag per key of the config sections of ``command`` (``SECTION_FLAGS``), from the fields' help text."""
    import typing

    for section in SECTION_FLAGS.get(command, ()):
        g = p.add_argument_group(f"{section} options (shortcuts for --set {section}.KEY=VALUE)")
        for name, f, tp in _section_fields(section):
            flag = f"--{section}-{name.replace('_', '-')}"
            dest = f"section__{section}__{name}"
            helptext = f.metadata.get("help", "")
            if tp is bool:
                g.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=helptext)
            elif typing.get_origin(tp) is list:
                g.add_argument(flag, dest=dest, action="append", metavar="VALUES", help=helptext + " (comma-separated or repeated)")
            else:
                g.add_argument(flag, dest=dest, metavar="VALUE", help=helptext)


def _flag_overrides(args) -> list[str]:
    out = []
    for f in _influence_fields():
        value = getattr(args, f"influence_{f.name}", None)
        if value is None:
            continue
        if isinstance(value, list):  # repeated list flag: join the pieces (each may itself be comma-separated)
            value = ",".join(value)
        elif isinstance(value, bool):
            value = str(value).lower()
        out.append(f"influence.{f.name}={value}")
    for dest, value in sorted(vars(args).items()):
        if not dest.startswith("section__") or value is None:
            continue
        _, section, name = dest.split("__", 2)
        if isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = str(value).lower()
        out.append(f"{section}.{name}={value}")
    return out


def _presets():
    from lingtrace.config import PRESETS

    return PRESETS


def build_parser() -> argparse.ArgumentParser:
    from lingtrace.importing import DEV_ACCURACY

    parser = argparse.ArgumentParser(prog="lingtrace", description="Cross-lingual TracIn influence for multilingual fine-tuning.")
    parser.add_argument("--version", action="version", version=f"lingtrace {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the embedded default end to end (offline: multilingual-e5-small on CLDR emoji names; --preset emoji-llm: the SmolLM2-135M decoder)")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    _add_common(p, run_arg=False)

    p = sub.add_parser("run", help="run the configured pipeline from a YAML config or a preset")
    p.add_argument("config_file", metavar="CONFIG", nargs="?", help="YAML config (may start from `preset: NAME`); same as --config")
    p.add_argument("--out", help="run directory (default: runs/<config or preset name>; an existing run resumes with its config.json)")
    p.add_argument("--stages", default=",".join(DEMO_STAGES), help=f"comma-separated stages (default: {','.join(DEMO_STAGES)})")
    _add_common(p, run_arg=False)
    _add_section_options(p, "run")
    _add_influence_options(p)

    for stage in PIPELINE:  # one command per stage
        p = sub.add_parser(stage.name, help=stage.help)
        _add_common(p)
        _add_section_options(p, stage.name)
        if stage.name == "influence":
            _add_influence_options(p)

    p = sub.add_parser(
        "import",
        help="a run directory from checkpoints trained elsewhere (save_pretrained folders or a transformers.Trainer output folder), ready for select, influence, analyze, report",
    )
    p.add_argument("run", metavar="RUN", help="the run directory to create")
    p.add_argument(
        "checkpoints", metavar="CHECKPOINT", nargs="+",
        help="a transformers.Trainer output folder (its checkpoint-*/ subfolders, ordered by global step), or save_pretrained folders in training order",
    )
    p.add_argument("--data", metavar="PATH", help="the training, dev and test data the model was trained on: local files (a folder of train/dev/test files, or one file with a split column), columns mapped with data.columns")
    p.add_argument("--data-from", metavar="RUN", help="instead of --data: the data/ of an existing run (and its data settings)")
    p.add_argument("--final", metavar="N|FOLDER", help="the checkpoint to use as the final model: its number in training order or its folder (default: the last)")
    p.add_argument("--tokenizer", metavar="DIR|NAME", help="the tokenizer, for checkpoints saved without one (default: the Trainer folder's or another checkpoint's)")
    p.add_argument("--dev-accuracy", choices=list(DEV_ACCURACY), default=DEV_ACCURACY[0], help="evaluate each checkpoint on the dev data (default), or take the eval_accuracy logged in trainer_state.json")
    p.add_argument("--training-recipe", action="store_true", help="declare that the config's model.name and train.* are how the checkpoints were trained, so that the retraining experiments may run")
    p.add_argument("--base-model", metavar="DIR|NAME", help="peft LoRA adapter checkpoints: the base model they were trained on (default: the one adapter_config.json names)")
    p.add_argument("--no-second-moments", dest="second_moments", action="store_false", help="do not read the optimizer.pt of the checkpoints (AdamW's second moments, for adam-cosine)")
    _add_common(p, run_arg=False)

    p = sub.add_parser("experiment", help="retraining experiments on a run complete through influence: k-selection, zero-shot, imbalance, lds, languages, all")
    p.add_argument("name", metavar="NAME", help="k-selection (faithfulness of the top-k, with a random control), zero-shot, imbalance, lds (linear datamodeling score of every influence method), languages (reliance on each training language by retraining, against each method), or all")
    p.add_argument("run", metavar="RUN", help="the base run directory (complete through influence); results go to RUN/experiments/NAME/")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[], help="override an experiment.* key, e.g. --set experiment.ks=[50,100] (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="redo an experiment whose settings changed (retrainings with an unchanged training set are reused)")
    p.add_argument("--plan", action="store_true", help="only print the retrainings the experiment needs")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")

    p = sub.add_parser("config", help="print a config (a preset's or a run's) or every key with its help")
    p.add_argument("--preset", choices=sorted(_presets()))
    p.add_argument("--run", metavar="RUN")
    p.add_argument("--help-keys", action="store_true", help="list every config key, its default and its meaning")
    return parser


def _resolve_config(args, run: RunDir | None) -> Config:
    """--config/--preset, else the run directory's saved config; then the --set overrides (and flags).

    The overrides are applied before validation, so they may complete a config (e.g. data.path)."""
    overrides = list(args.overrides) + _flag_overrides(args)
    if getattr(args, "config", None):
        return load_config(args.config, overrides)
    if getattr(args, "preset", None):
        cfg = preset(args.preset)
    elif run is not None and run.config_path.exists():
        cfg = Config.from_dict(read_json(run.config_path))
    else:
        raise LingtraceError(
            f"no config for {run.root if run else 'this run'}",
            "give --config YAML or --preset NAME (see `lingtrace config --help-keys`)",
        )
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def _run_target(args) -> tuple[RunDir, Config]:
    """`lingtrace run`: the run directory and config from CONFIG / --config / --preset (or --out's own run)."""
    if args.config_file and args.config:
        raise LingtraceError("`lingtrace run` got both CONFIG and --config", "give the YAML config once")
    args.config = args.config or args.config_file
    if args.config and args.preset:
        raise LingtraceError("`lingtrace run` got both a config file and --preset", "start the YAML with `preset: NAME` instead")
    name = Path(args.config).stem if args.config else args.preset
    if args.out is None and name is None:
        raise LingtraceError("`lingtrace run` needs a config", "give CONFIG (a YAML file), --preset NAME, or --out RUN of an existing run")
    run = RunDir(args.out or Path("runs") / name)
    return run, _resolve_config(args, run)


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("transformers", "httpx", "urllib3", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _summary(run: RunDir) -> None:
    if run.manifest_path.exists():
        m = read_json(run.manifest_path)
        for e in m["epochs"]:
            per = ", ".join(f"{k} {v:.3f}" for k, v in sorted(e["dev_accuracy_per_lang"].items()))
            loss = "unknown" if e.get("train_loss") is None else f"{e['train_loss']:.4f}"
            source = f"  from {e['source']}" if e.get("source") else ""
            print(f"epoch {e['epoch']}: train loss {loss}  dev accuracy {e['dev_accuracy']:.4f}  ({per}){source}")
        base = m.get("dev_majority_baseline")
        if base:
            per = ", ".join(f"{k} {v:.3f}" for k, v in sorted(base.items()) if k != "all")
            print(f"majority-class baseline on dev: {base['all']:.4f}  ({per})")
        print(f"final model: epoch {m['final_epoch']}")
        warning = majority_class_warning(m)
        if warning:
            print(f"WARNING: {warning}")
    if run.report_page.exists():
        print(f"report: {run.report_page}")
    print(f"outputs in {run.root}")


#: commands that may run under torchrun (one process per GPU, or several CPU processes with gloo)
DISTRIBUTED_COMMANDS = ("train", "influence", "run", "demo")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    if distributed and rank != 0:  # one voice: the other ranks only warn, and show no progress bars
        args.quiet = True
        os.environ["LINGTRACE_NO_PROGRESS"] = "1"
    _setup_logging(getattr(args, "quiet", False))
    from lingtrace.utils import tune_allocator

    tune_allocator()
    start = time.time()
    dist = None
    try:
        if distributed:
            if args.command not in DISTRIBUTED_COMMANDS:
                raise LingtraceError(f"`lingtrace {args.command}` does not run under torchrun", "run it as one process")
            from lingtrace.distributed import from_env

            dist = from_env()
        if args.command == "config":
            return _cmd_config(args)
        if args.command == "demo":
            run = RunDir(args.out)
            if not (args.config or args.preset):
                args.preset = "emoji"
            cfg = _resolve_config(args, run)
            run.refuse_other_config(cfg, args.overwrite, f"choose another --out, or pass --overwrite to recompute {run.root} with this config")
            _run(run, cfg, DEMO_STAGES, args.overwrite, dist)
        elif args.command == "experiment":
            from lingtrace.experiments import run_experiment

            base = RunDir(args.run)
            print(run_experiment(args.name, base, args.overrides, overwrite=args.overwrite, plan_only=args.plan))
            if not args.plan and base.is_complete("report"):
                # the report shows every complete experiment: refresh it (same config, same analyses)
                from lingtrace.report.stage import run_report

                path = run_report(base, base.load_config())["path"]
                print(f"report updated: {path}")
        elif args.command == "import":
            from lingtrace.importing import find_checkpoints, import_config, import_run

            run = RunDir(args.run)
            data_from = RunDir(args.data_from) if args.data_from else None
            sources, trainer_dirs = find_checkpoints(args.checkpoints, args.base_model)
            cfg = import_config(sources, args.config, args.preset, args.overrides, args.data, data_from, args.training_recipe)
            import_run(
                run, sources, trainer_dirs, cfg, data_from=data_from, final=args.final, tokenizer=args.tokenizer,
                dev_accuracy=args.dev_accuracy, training_recipe=args.training_recipe, overwrite=args.overwrite,
                second_moments=args.second_moments,
            )
        elif args.command == "run":
            run, cfg = _run_target(args)
            stages = [s.strip() for s in args.stages.split(",") if s.strip()]
            unknown = [s for s in stages if s not in STAGES]
            if unknown or not stages:
                raise LingtraceError(f"unknown stage {unknown[0] if unknown else args.stages!r}", f"choose from {', '.join(STAGES)}")
            _run(run, cfg, stages, args.overwrite, dist)
        else:
            run = RunDir(args.run)
            cfg = _resolve_config(args, run)
            _run(run, cfg, [args.command], args.overwrite, dist)
        if args.command in ("demo", "run", "train", "import") and rank == 0:
            _summary(run)
        log.info("finished in %.1f s", time.time() - start)
        return 0
    except LingtraceError as e:
        print(f"lingtrace: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lingtrace: interrupted; completed outputs are kept, rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        if dist is not None:
            from lingtrace.distributed import shutdown

            shutdown(dist)


def _run(run: RunDir, cfg: Config, stages: list[str], overwrite: bool, dist=None) -> None:
    from lingtrace.distributed import SINGLE
    from lingtrace.pipeline import run_stages

    run_stages(run, cfg, stages, overwrite=overwrite, dist=dist or SINGLE)


def _cmd_config(args) -> int:
    import json

    if args.help_keys:
        for key, text, default in help_keys():
            print(f"{key} = {default!r}\n    {text}")
        return 0
    if args.run:
        cfg = RunDir(args.run).load_config()
    else:
        cfg = preset(args.preset or "emoji")
    print(json.dumps(cfg.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
