"""TRAK variants against a finished run's LDS bank: which setting makes ``trak`` predict retraining.

Reads (never writes) a run whose ``lingtrace experiment lds`` is done (``RUN/experiments/lds/``: the
retrained random subsets, ``margins.parquet``; ``RUN/experiments/noise-floor/noise.parquet`` for the
ceiling) and scores TRAK variants with the lds module's own statistics (``lds.predicted_sums``,
``lds.lds_tables``: the same Spearman per test example, bootstrap interval and permutation test as the
experiment), so the numbers are comparable with the experiment's table.

1. Sanity: the LDS of every score store the run holds (tracin, and trak when computed) recomputed here
   must equal the experiment's ``summary.json``.
2. Features, once per checkpoint (cached in ``--cache``): every training and selected test example's
   loss gradient over the selected parameters, CountSketched with the run's ``influence.projection_seed``
   to ``--sketch-dim`` numbers (65,536 by default) by the library's own ``CountSketch``; the
   probability of the gold class and the margin from a forward pass. A CountSketch to k numbers with
   k dividing ``--sketch-dim`` is the larger sketch folded (bucket ``h mod k``, same signs): the library's
   sketch at k exactly, so one pass serves every k. (N + M) E gradient passes.
3. Variants, in float64 from the cached sketches (seconds each): the kernel form
   ``phi_test^T (Phi^T Phi + lambda I)^-1 phi_train`` per checkpoint (through the N x N Gram when
   k > N), combined over checkpoints, then the LDS:

   * ``projection``: CountSketch at k (folded), or ``gauss``: a Gaussian projection (k x sketch-dim, of
     the large sketch: close to a Gaussian projection of the full gradient when k << sketch-dim);
   * ``output``: ``loss`` (cross-entropy gradients on both sides: lingtrace's trak before issue 22) or
     ``margin`` (TRAK: the margin log p/(1-p) whose gradient is grad L / -(1-p); kernel and test side
     of the margin gradients, the training side weighted by Q = 1 - p: ``phi_f(z)^T (Phi_f^T Phi_f)^-1
     phi_f(z_j) (1 - p_j)``), ``margin-noq`` (margin gradients without Q);
   * ``damping``: lambda = rel * trace(K) / k (``--damping`` values; 0 is the plain inverse, k <= N only);
   * ``combine``: ``sum`` over checkpoints, ``final`` (the final checkpoint only), ``rownorm`` (each
     checkpoint's [test x train] row scaled to unit RMS before the sum), ``trak`` (TRAK's ensemble
     average: the mean over checkpoints of phi^T K^-1 Phi^T times the mean of Q).

   ``trak-lib`` rows score with ``TrakEstimator`` itself through the engine (the shipped defaults, or
   ``--lib-options`` overrides), to check the shipped implementation against the offline variant.

Usage (the table: variant, mean LDS, bootstrap 95% interval, permutation p, detectable LDS):

    python benchmarks/bench_trak.py /work/runs/new-demo --cache /tmp/bench-trak
    python benchmarks/bench_trak.py RUN --cache DIR --grid full --json out.json
    python benchmarks/bench_trak.py RUN --cache DIR --lib        # also the shipped TrakEstimator (one more pass)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lingtrace.analysis.common import ALL
from lingtrace.data import schema
from lingtrace.experiments import lds, noise
from lingtrace.experiments.base import Base, load_base, methods_present
from lingtrace.run import RunDir

FEATURES_VERSION = 1


# ---------------------------------------------------------------- the bank


@dataclass
class Bank:
    base: Base
    measured: np.ndarray  # [test x subsets] margins of the retrained models
    masks: np.ndarray  # [subsets x train] kept training examples
    sd_seed: np.ndarray  # [test] margin spread over the unchanged-data models
    test_uids: list[str]
    train_uids: list[str]
    test_langs: list[str]
    reported: dict  # summary.json["lds"]
    settings: dict

    def table(self, predicted: dict[str, np.ndarray]) -> pd.DataFrame:
        """The lds experiment's summary rows (all test languages) of [test x train] score matrices."""
        pred = {name: lds.predicted_sums(s, self.masks) for name, s in predicted.items()}
        n = int(self.settings.get("lds_resamples", 2000))
        _, table = lds.lds_tables(
            pred, self.measured, self.test_uids, self.test_langs, self.base.languages, self.sd_seed, n, n, int(self.settings.get("seed", 0))
        )
        return table[table["test_lang"] == ALL].set_index("method")


def load_bank(run: RunDir) -> Bank:
    base = load_base(run)
    exp = run.experiment_dir(lds.NAME)
    summary = json.loads((exp / "summary.json").read_text())
    margins = pd.read_parquet(exp / "margins.parquet")
    names = margins.drop_duplicates("subset").sort_values("subset")["sub_run"].tolist()
    subs = {name: RunDir(exp / "runs" / name) for name in names}
    test_uids = base.selected[schema.UID].astype(str).tolist()
    train_uids = base.train[schema.UID].astype(str).tolist()
    measured = margins.pivot(index="test_uid", columns="subset", values="margin").reindex(test_uids).to_numpy(dtype=np.float64)
    masks = lds.kept_masks(subs, names, train_uids)
    settings = summary.get("settings", {})
    sd_seed = np.full(len(test_uids), np.nan)
    table_path = run.experiment_dir(noise.NAME) / "noise.parquet"
    if table_path.exists() and int(settings.get("noise_seeds", 0)):
        table = pd.read_parquet(table_path)
        seeds = [int(base.cfg.train.seed) + i for i in range(1, int(settings["noise_seeds"]) + 1)]
        table = table[table["seed"].isin(seeds)]
        if len(table):
            sd_seed = noise.spread_per_example(table, "margin").reindex(test_uids).to_numpy(dtype=np.float64)
    langs = base.selected[schema.LANG].astype(str).tolist()
    return Bank(base, measured, masks, sd_seed, test_uids, train_uids, langs, summary.get("lds", {}), settings)


# ---------------------------------------------------------------- features


def _engine(run: RunDir, estimator, options=None):
    from lingtrace.config.influence import Tuning
    from lingtrace.influence.engine import Engine
    from lingtrace.influence.stage import _inputs
    from lingtrace.influence.tracin import checkpoint_factory

    cfg = run.load_config()
    inputs = _inputs(run, cfg)
    opts = options or cfg.influence
    engine = Engine(estimator, checkpoint_factory(cfg.model.freeze_embeddings), inputs.checkpoints, opts, Tuning(show_progress=False), objective=inputs.objective)
    return engine, inputs, cfg


def extract_features(run: RunDir, cache: Path, sketch_dim: int, batch_size: int | None = None) -> list[dict]:
    """Per checkpoint: CountSketches [n, sketch_dim] (float32) of the loss gradients of the training and
    test examples, their squared gradient norms, losses, 1 - p(gold) and margins (float64). Cached."""
    import dataclasses

    from lingtrace.influence.methods.gradient import GradientEstimator
    from lingtrace.influence.terms import project
    from lingtrace.objectives import correct_class_margin

    class Probe(GradientEstimator):
        name = "trak-probe"
        projects = True

        def normalise(self, matrix, train_norm, test_norm):
            pass

    cfg = run.load_config()
    options = dataclasses.replace(cfg.influence, projection_dim=int(sketch_dim), **({"batch_size": batch_size} if batch_size else {}))
    probe = Probe(options)
    engine, inputs, cfg = _engine(run, probe, options)
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for index, ckpt in enumerate(engine.checkpoints):
        path = cache / f"features-v{FEATURES_VERSION}-epoch-{ckpt.epoch}-d{sketch_dim}-s{options.projection_seed}.npz"
        if path.exists():
            data = dict(np.load(path, allow_pickle=False))
            if list(data["train_uids"]) == list(inputs.train.uids) and list(data["test_uids"]) == list(inputs.test.uids):
                out.append({**data, "epoch": ckpt.epoch, "final": ckpt.final})
                continue
        t0 = time.perf_counter()
        ctx = engine.load(index, inputs.train, inputs.pad_id)
        feats = {"epoch": ckpt.epoch, "final": ckpt.final}
        for side, ex in (("test", inputs.test), ("train", inputs.train)):
            n = len(ex)
            phi = np.zeros((n, sketch_dim), dtype=np.float32)
            sq, loss, q, margin = (np.zeros(n) for _ in range(4))
            for idx, batch in ctx.stream(ex, f"{side} sketches"):
                g = probe.featurise(batch)
                i = idx.cpu().numpy()
                phi[i] = project(probe.sketch, g).float().cpu().numpy()
                sq[i] = g.sq_norms().cpu().numpy()
                loss[i] = g.loss.double().cpu().numpy()
                with torch.no_grad():
                    logits = ctx.objective.batch_logits(ctx.model, batch).double()
                labels = batch.labels
                m = correct_class_margin(logits, labels)
                margin[i] = m.cpu().numpy()
                q[i] = torch.sigmoid(-m).cpu().numpy()  # 1 - p = sigmoid(-margin), exact for confident models
            feats.update({f"{side}_phi": phi, f"{side}_sq": sq, f"{side}_loss": loss, f"{side}_q": q, f"{side}_margin": margin})
        probe.finish()
        feats["train_uids"] = np.asarray(inputs.train.uids)
        feats["test_uids"] = np.asarray(inputs.test.uids)
        np.savez(path, **{k: v for k, v in feats.items() if k not in ("epoch", "final")})
        print(f"  features of epoch {ckpt.epoch}: {time.perf_counter() - t0:.0f} s", flush=True)
        out.append(feats)
    return out


# ---------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    name: str
    dim: int = 2048
    projection: str = "countsketch"  # countsketch (folded) | gauss
    output: str = "loss"  # loss | margin (TRAK, with Q) | margin-noq
    damping: float = 1e-3  # lambda = damping * trace(K) / k
    combine: str = "sum"  # sum | final | rownorm | trak
    gauss_seed: int = 0


def fold(phi: np.ndarray, k: int) -> np.ndarray:
    d = phi.shape[1]
    if d % k:
        raise ValueError(f"a CountSketch to {k} is a fold of one to {d} only when {k} divides {d}")
    return phi.reshape(phi.shape[0], d // k, k).sum(1, dtype=np.float64) if d != k else phi.astype(np.float64)


_GAUSS: dict[tuple[int, int, int], np.ndarray] = {}


def project(phi: np.ndarray, v: Variant) -> np.ndarray:
    if v.projection == "countsketch":
        return fold(phi, v.dim)
    key = (phi.shape[1], v.dim, v.gauss_seed)
    if key not in _GAUSS:
        _GAUSS.clear()
        rng = np.random.default_rng(v.gauss_seed)
        _GAUSS[key] = (rng.standard_normal((phi.shape[1], v.dim), dtype=np.float32) / np.sqrt(v.dim)).astype(np.float32)
    return (phi @ _GAUSS[key]).astype(np.float64)


def kernel_scores(train: np.ndarray, test: np.ndarray, damping: float) -> np.ndarray:
    """[test x train] phi_test^T (Phi^T Phi + lambda I)^-1 phi_train, lambda = damping * trace(Phi^T Phi) / k
    (float64; primal k x k solve when k <= N, else through the N x N Gram)."""
    n, k = train.shape
    lam = damping * float(np.einsum("ij,ij->", train, train)) / k
    if k <= n:
        kern = train.T @ train
        kern[np.diag_indices(k)] += lam
        return np.linalg.solve(kern, test.T).T @ train.T
    if lam == 0:
        raise ValueError("damping 0 needs k <= N")
    gram = train @ train.T
    gram[np.diag_indices(n)] += lam
    return np.linalg.solve(gram, train @ test.T).T


def variant_scores(feats: list[dict], v: Variant) -> np.ndarray:
    per, qs = [], []
    for f in feats:
        tr, te = project(f["train_phi"], v), project(f["test_phi"], v)
        q_tr, q_te = f["train_q"], f["test_q"]
        if v.output == "loss":
            s = kernel_scores(tr, te, v.damping)
            q = np.ones_like(q_tr)
        elif v.output in ("margin", "margin-noq"):
            # grad f = grad L / -(1 - p): the sign cancels between the sides (the train side's Q
            # weighting turns (1 - p_j) grad f_j back into -grad L_j)
            tr_f, te_f = tr / -q_tr[:, None], te / -q_te[:, None]
            s = kernel_scores(tr_f, te_f, v.damping)
            q = q_tr if v.output == "margin" else np.ones_like(q_tr)
        else:
            raise ValueError(v.output)
        per.append(s)
        qs.append(q)
    if v.combine == "final":
        finals = [i for i, f in enumerate(feats) if f["final"]] or [len(feats) - 1]
        return per[finals[-1]] * qs[finals[-1]][None, :]
    if v.combine == "trak":
        return np.mean(per, axis=0) * np.mean(qs, axis=0)[None, :]
    total = np.zeros_like(per[0])
    for s, q in zip(per, qs):
        s = s * q[None, :]
        if v.combine == "rownorm":
            rms = np.sqrt((s * s).mean(axis=1, keepdims=True))
            s = s / np.where(rms > 0, rms, 1.0)
        elif v.combine != "sum":
            raise ValueError(v.combine)
        total += s
    return total


def sketch_cosine(feats: list[dict], dim: int | None = None) -> np.ndarray:
    """Cosine TracIn from the sketches (exact norms): checks the features against the tracin store."""
    total = 0.0
    for f in feats:
        tr = f["train_phi"].astype(np.float64) if dim is None else fold(f["train_phi"], dim)
        te = f["test_phi"].astype(np.float64) if dim is None else fold(f["test_phi"], dim)
        total = total + (te @ tr.T) / np.sqrt(f["test_sq"])[:, None] / np.sqrt(f["train_sq"])[None, :]
    return total


def grid(kind: str, n_train: int) -> list[Variant]:
    base = Variant("before issue 22 (k=2048 CountSketch, loss, lambda=1e-3 tr/k, sum)")
    out = [base, Variant("trak's default now (damping 1)", damping=1.0)]
    dims = [256, 512, 1024, 4096, 8192] if kind == "full" else [256, 512, 1024]
    out += [Variant(f"k={k}", dim=k) for k in dims]
    out += [Variant("gauss k=2048", projection="gauss"), Variant("gauss k=512", dim=512, projection="gauss")]
    out += [Variant("margin+Q (TRAK output)", output="margin"), Variant("margin, no Q", output="margin-noq")]
    out += [Variant(f"combine={c}", combine=c) for c in ("final", "rownorm")]
    out += [Variant("margin+Q, combine=trak", output="margin", combine="trak")]
    damp = [1e-2, 1e-1, 0.3, 1.0, 3.0, 10.0, 100.0, 1e4] if kind == "full" else [1e-2, 1e-1, 1.0]
    out += [Variant(f"damping={d:g}", damping=d) for d in damp]
    if kind == "full":
        out += [Variant(f"k={k}, damping=0", dim=k, damping=0.0) for k in (256, 512, 1024) if k <= n_train]
        out += [Variant(f"k={k}, damping={d:g}", dim=k, damping=d) for k in (512, 1024) for d in (1e-2, 1e-1)]
        out += [Variant(f"margin+Q, k={k}", dim=k, output="margin") for k in (512, 1024)]
        out += [Variant(f"margin+Q, damping={d:g}", output="margin", damping=d) for d in (1e-2, 1e-1, 1.0)]
        out += [Variant(f"k={k}, combine=trak margin+Q", dim=k, output="margin", combine="trak") for k in (512, 1024)]
        out += [Variant(f"k={k}, damping={d:g}", dim=k, damping=d) for k in (512, 8192) for d in (1.0, 10.0)]
        out += [Variant("margin+Q, damping=10", output="margin", damping=10.0), Variant("gauss k=2048, damping=1", projection="gauss", damping=1.0)]
    return out


def library_scores(run: RunDir, overrides: dict) -> np.ndarray:
    """The shipped TrakEstimator through the engine (the run's influence options, with ``overrides``)."""
    import dataclasses

    from lingtrace.influence.methods import estimator_class
    from lingtrace.influence.plan import MemorySink

    cfg = run.load_config()
    options = dataclasses.replace(cfg.influence, **overrides)
    est = estimator_class("trak")(options)
    engine, inputs, _ = _engine(run, est, options)
    sink = MemorySink(len(inputs.test), len(inputs.train))
    engine.run(inputs.train, inputs.test, sink, inputs.pad_id)
    total = sum(np.asarray(sink.mats[e]["scores"], dtype=np.float64) for e in engine.epochs)
    return total, inputs


# ---------------------------------------------------------------- main


def _fmt(row) -> str:
    return f"{row['mean_lds']:7.3f}  [{row['ci_low']:6.3f}, {row['ci_high']:6.3f}]  p={row['p_vs_null']:.3g}  detectable {row['detectable_lds']:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/bench-trak"), help="where the per-checkpoint sketches are kept")
    ap.add_argument("--sketch-dim", type=int, default=65536)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--grid", choices=("short", "full"), default="short")
    ap.add_argument("--lib", action="store_true", help="also score with the shipped TrakEstimator (one more engine run)")
    ap.add_argument("--lib-options", default="{}", help="JSON overrides of influence options for --lib, e.g. '{\"projection_dim\": 512}'")
    ap.add_argument("--json", type=Path, default=None, help="write the table as JSON")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    run = RunDir(args.run)
    bank = load_bank(run)
    print(f"LDS bank: {bank.measured.shape[0]} test examples x {bank.measured.shape[1]} subsets, {len(bank.train_uids)} training examples")
    rows: list[tuple[str, pd.Series]] = []

    # 1. the stores the run holds, through the same statistics: must reproduce summary.json
    stores = {m: bank.base.method_total(m) for m in methods_present(run)}
    table = bank.table(stores)
    for m in stores:
        rep = bank.reported.get(m, {})
        ok = "reproduces" if rep and abs(rep["mean_lds"] - table.loc[m, "mean_lds"]) < 1e-9 else f"experiment reported {rep.get('mean_lds')}"
        print(f"store {m:>14}: {_fmt(table.loc[m])}   ({ok})")
        rows.append((f"store:{m}", table.loc[m]))

    # 2. features
    t0 = time.perf_counter()
    feats = extract_features(run, args.cache, args.sketch_dim, args.batch_size)
    print(f"features: {len(feats)} checkpoints, {time.perf_counter() - t0:.0f} s (cached in {args.cache})")
    order_tr = pd.Index([str(u) for u in feats[0]["train_uids"]]).get_indexer(bank.train_uids)
    order_te = pd.Index([str(u) for u in feats[0]["test_uids"]]).get_indexer(bank.test_uids)
    assert (order_tr >= 0).all() and (order_te >= 0).all()

    def aligned(s: np.ndarray) -> np.ndarray:
        return s[np.ix_(order_te, order_tr)]

    # 3. variants
    predicted = {"tracin from the sketch (cosine, k=sketch-dim)": aligned(sketch_cosine(feats))}
    if "tracin" in stores:
        c = np.corrcoef(predicted["tracin from the sketch (cosine, k=sketch-dim)"].ravel(), stores["tracin"].ravel())[0, 1]
        print(f"sketch-cosine vs the tracin store: Pearson {c:.4f}")
    if args.grid == "full":  # the limit of a damping that swamps the kernel: the plain gradient dot product
        predicted["gradient dot product (k=sketch-dim)"] = aligned(sum(f["test_phi"].astype(np.float64) @ f["train_phi"].astype(np.float64).T for f in feats))
    for v in grid(args.grid, len(bank.train_uids)):
        t1 = time.perf_counter()
        predicted[v.name] = aligned(variant_scores(feats, v))
        print(f"  {v.name}: {time.perf_counter() - t1:.1f} s", flush=True)
    if "trak" in stores:
        info = json.loads((run.influence_store("trak") / "meta.json").read_text()).get("method_info", {})
        damping, output = float(info.get("relative_damping", 1e-3)), info.get("output", "loss")
        same = aligned(variant_scores(feats, Variant("store", damping=damping, output=output)))
        rel = np.abs(same - stores["trak"]).max() / np.abs(stores["trak"]).max()
        print(f"offline variant of the trak store's settings (damping {damping:g}, {output}) vs the store: max relative difference {rel:.2e}")
    if args.lib:
        overrides = json.loads(args.lib_options)
        t1 = time.perf_counter()
        lib, inputs = library_scores(run, overrides)
        tr = pd.Index(inputs.train.uids).get_indexer(bank.train_uids)
        te = pd.Index(inputs.test.uids).get_indexer(bank.test_uids)
        predicted[f"trak-lib {overrides or 'defaults'}"] = lib[np.ix_(te, tr)]
        print(f"  trak-lib: {time.perf_counter() - t1:.0f} s")
    table = bank.table(predicted)
    print()
    print(f"{'variant':<58} {'LDS':>7}  {'95% interval':<17} permutation / power")
    for name in predicted:
        print(f"{name:<58} {_fmt(table.loc[name])}")
        rows.append((name, table.loc[name]))
    if args.grid == "full":
        # the same variants on halves of the bank: the first and last half of the subsets, even and odd test examples
        m, n_sub, n_test = bank.measured, bank.measured.shape[1], bank.measured.shape[0]
        halves = [(np.arange(n_sub // 2), np.arange(n_test)), (np.arange(n_sub // 2, n_sub), np.arange(n_test)),
                  (np.arange(n_sub), np.arange(0, n_test, 2)), (np.arange(n_sub), np.arange(1, n_test, 2))]
        print()
        print(f"{'variant':<58} subsets 1st half | 2nd half ; test examples even | odd (mean LDS)")
        for name, s in predicted.items():
            p = lds.predicted_sums(s, bank.masks)
            v = [float(np.nanmean(lds.lds_per_example(p[np.ix_(r, c)], m[np.ix_(r, c)]))) for c, r in halves]
            print(f"{name:<58} {v[0]:7.3f} | {v[1]:6.3f} ; {v[2]:6.3f} | {v[3]:6.3f}")
    ceiling = table["mean_ceiling"].iloc[0]
    print(f"(noise ceiling {ceiling:.3f}; {bank.measured.shape[1]} subsets, {bank.measured.shape[0]} test examples)")
    if args.json:
        args.json.write_text(json.dumps([{"variant": n, **{k: float(r[k]) for k in lds.LDS if k not in ("method", "test_lang")}} for n, r in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
