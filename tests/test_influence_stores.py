"""Several influence methods in one stage: one store per method, each resumable on its own, runs made
before several methods existed (store directly in RUN/influence/), fingerprints, and the
out-of-core summed score."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lingtrace.config import Config, apply_overrides, preset
from lingtrace.errors import LingtraceError
from lingtrace.influence import store
from lingtrace.influence.methods.adam_cosine import SECOND_MOMENTS_FILE
from lingtrace.influence.store import load_scores
from lingtrace.io import read_json, write_json
from lingtrace.pipeline import run_stages
from lingtrace.run import RunDir, fingerprint

OLD_KEYS = ["mode", "lr_weighted", "params", "breakdown", "batch_size", "test_chunk", "device", "dtype", "checkpoints", "projection_dim", "projection_seed"]


@pytest.fixture
def trained_run(tiny_run):
    run, cfg = tiny_run
    cfg = apply_overrides(cfg, ["select.per_lang=3", "influence.batch_size=5", "train.epochs=2"])
    run.save_config(cfg)
    run_stages(run, cfg, ["train", "select"])
    return run, cfg


def _with_methods(cfg, *methods):
    return apply_overrides(cfg, [f"influence.methods=[{','.join(methods)}]"])


def _count_puts(monkeypatch):
    """The store directory of every part written from now on."""
    written = []
    real_put = store.StoreWriter.put

    def counting_put(self, part):
        written.append(self.directory)
        real_put(self, part)

    monkeypatch.setattr(store.StoreWriter, "put", counting_put)
    return written


def _hide_second_moments(run, aside):
    """Move the second-moment files training wrote out of the checkpoints (a run trained before training
    saved them); returns the function that puts them back."""
    moved = []
    for record in read_json(run.manifest_path)["epochs"]:
        source = run.checkpoints_dir / record["path"] / SECOND_MOMENTS_FILE
        assert source.exists()  # training writes them
        target = aside / record["path"]
        target.mkdir(parents=True)
        shutil.move(source, target / SECOND_MOMENTS_FILE)
        moved.append((target / SECOND_MOMENTS_FILE, source))

    def restore():
        for target, source in moved:
            shutil.move(target, source)

    return restore


def _stamps(directory):
    return {p.name: p.stat().st_mtime_ns for p in sorted(directory.glob("*"))}


def test_several_methods_one_store_each_and_an_added_method_alone(trained_run, tmp_path, monkeypatch):
    run, cfg = trained_run
    ref = RunDir(tmp_path / "ref")
    shutil.copytree(run.root, ref.root)
    run_stages(ref, cfg, ["influence"])  # tracin alone, the default

    both = _with_methods(cfg, "tracin", "representation")
    run_stages(run, both, ["influence"])
    assert run.influence_dir == run.root / "influence" / "tracin"
    tracin, rep = load_scores(run), load_scores(run, method="representation")
    assert tracin.method == "tracin" and tracin.directory == run.influence_store("tracin")
    assert rep.method == "representation" and rep.directory == run.root / "influence" / "representation"
    manifest = read_json(run.manifest_path)
    assert rep.epochs == [manifest["final_epoch"]] and rep.meta["stats"]["forward_passes"] == len(rep.train_uids) + len(rep.test_uids)
    assert np.all(np.abs(rep.total()) <= 1 + 1e-6)
    # tracin's store is the one the default config makes, with the same fingerprint
    alone = load_scores(ref)
    assert tracin.info.fingerprint == alone.info.fingerprint
    for e in alone.epochs:
        np.testing.assert_array_equal(tracin.epoch(e), alone.epoch(e))
    # the stage marker records every method's fingerprint and store
    info = read_json(run.stage_marker("influence"))["info"]["methods"]
    assert {m: i["fingerprint"] for m, i in info.items()} == {"tracin": tracin.info.fingerprint, "representation": rep.info.fingerprint}
    assert info["representation"]["store"] == "influence/representation"

    # adding a method that cannot run (no second moments) fails clearly and touches no other store
    restore_second_moments = _hide_second_moments(run, tmp_path / "aside")
    stamps = {m: _stamps(run.influence_store(m)) for m in ("tracin", "representation")}
    three = _with_methods(cfg, "tracin", "representation", "adam-cosine")
    with pytest.raises(LingtraceError, match="no optimizer second moments.*fix: retrain"):
        run_stages(run, three, ["influence"])
    assert {m: _stamps(run.influence_store(m)) for m in stamps} == stamps
    assert not run.influence_store("adam-cosine").exists()
    assert load_scores(run).meta["complete"] and load_scores(run, method="representation").meta["complete"]

    # with the moments there, rerunning computes the added method only
    restore_second_moments()
    written = _count_puts(monkeypatch)
    run_stages(run, three, ["influence"])
    assert written and set(written) == {run.influence_store("adam-cosine")}
    assert {m: _stamps(run.influence_store(m)) for m in stamps} == stamps
    adam = load_scores(run, method="adam-cosine")
    assert adam.meta["complete"] and adam.epochs == tracin.epochs and adam.groups == tracin.groups
    assert adam.info.method_info["steps"] == {str(r["epoch"]): r["steps"] for r in manifest["epochs"] if r["epoch"] in adam.epochs}
    assert np.all(np.abs(adam.total()) <= len(adam.epochs) + 1e-5)
    assert set(read_json(run.stage_marker("influence"))["info"]["methods"]) == {"tracin", "representation", "adam-cosine"}
    # a complete stage is skipped; a changed mode is refused, and --overwrite recomputes only the
    # methods the mode changes (representation and adam-cosine ignore it)
    run_stages(run, three, ["influence"])
    dot = apply_overrides(three, ["influence.mode=dot"])
    with pytest.raises(LingtraceError, match="influence.mode"):
        run_stages(run, dot, ["influence"])
    written.clear()
    run_stages(run, dot, ["influence"], overwrite=True)
    assert set(written) == {run.influence_store("tracin")}
    assert load_scores(run).mode == "dot" and load_scores(run, method="adam-cosine").mode == "cosine"


def test_a_run_made_before_several_methods_keeps_its_store(trained_run, monkeypatch):
    run, cfg = trained_run
    run_stages(run, cfg, ["influence"])
    # the layout of earlier versions: tracin's store directly in RUN/influence/, meta without "method"
    new_store = run.influence_store("tracin")
    for p in new_store.iterdir():
        shutil.move(str(p), str(run.root / "influence" / p.name))
    new_store.rmdir()
    meta = read_json(run.root / "influence" / "meta.json")
    meta.pop("method"), meta.pop("method_info")
    write_json(run.root / "influence" / "meta.json", meta)

    legacy = load_scores(run)
    assert legacy.directory == run.root / "influence" == run.influence_dir and legacy.method == "tracin"
    assert load_scores(run.root).directory == legacy.directory and load_scores(run.root / "influence").directory == legacy.directory
    before = legacy.total()
    run_stages(run, cfg, ["influence"])  # complete: skipped
    # adding a method computes it alone, next to the old store
    written = _count_puts(monkeypatch)
    both = _with_methods(cfg, "tracin", "representation")
    run_stages(run, both, ["influence"])
    assert set(written) == {run.root / "influence" / "representation"}
    np.testing.assert_array_equal(load_scores(run).total(), before)
    assert load_scores(run, method="representation").directory == run.root / "influence" / "representation"
    # recomputing the old store (another mode) clears its own files only
    written.clear()
    run_stages(run, apply_overrides(both, ["influence.mode=dot"]), ["influence"], overwrite=True)
    assert set(written) == {run.root / "influence"}
    assert load_scores(run).mode == "dot" and load_scores(run, method="representation").meta["complete"]


def test_fingerprints_of_existing_runs_are_unchanged():
    """The influence section gains `methods`; at its default it is left out of the stage fingerprints,
    which keep the values of the version before (computed there: lingtrace 670c2eb)."""
    d = Config().to_dict()["influence"]
    assert list(d) == OLD_KEYS + ["methods", "ekfac_damping", "ekfac_measurement", "ekfac_final_only", "trak_damping", "trak_output"]
    assert d["methods"] == ["tracin"]
    run = RunDir("unused")
    assert fingerprint(run.stage_config(Config(), "influence")) == "4b33e33f2d4ec889"
    assert fingerprint(run.stage_config(Config(), "analyze")) == "14b282088fd26a45"
    assert fingerprint(run.stage_config(preset("emoji"), "influence")) == "d17207b0d6c577e1"
    assert "methods" in run.stage_config(_with_methods(Config(), "tracin", "representation"), "influence")["influence"]


def test_adding_a_method_reruns_a_stage_instead_of_refusing_it(tmp_path):
    run = RunDir(tmp_path)
    cfg = Config()
    run.mark_complete(cfg, "influence")
    assert run.check_stage(cfg, "influence")
    assert not run.check_stage(_with_methods(cfg, "tracin", "representation"), "influence")
    with pytest.raises(LingtraceError, match="influence.mode"):
        run.check_stage(_with_methods(apply_overrides(cfg, ["influence.mode=dot"]), "tracin", "representation"), "influence")


def test_total_is_summed_block_by_block_into_float32_or_a_memory_map(tmp_path):
    rng = np.random.default_rng(0)
    mats = {e: rng.normal(size=(23, 301)).astype(np.float32) for e in (1, 2, 3)}
    d = tmp_path / "influence"
    store.write_axes(d, [f"z{i}" for i in range(301)], [f"t{i}" for i in range(23)])
    for e, m in mats.items():
        store.write_epoch(d, e, {"scores": m})
    store.write_meta(d, store.StoreMeta(epochs=[1, 2, 3], epochs_done=[1, 2, 3], complete=True))
    scores = load_scores(d)
    exact = sum(m.astype(np.float64) for m in mats.values())
    total = scores.total()
    assert total.dtype == np.float64
    np.testing.assert_array_equal(total, exact)
    np.testing.assert_array_equal(scores.total(dtype=np.float32), exact.astype(np.float32))
    mm = np.lib.format.open_memmap(tmp_path / "total.npy", mode="w+", dtype=np.float32, shape=scores.shape)
    assert scores.total(out=mm) is mm
    np.testing.assert_array_equal(np.load(tmp_path / "total.npy"), exact.astype(np.float32))
    rows = [(start, block) for start, block in scores.blocks(block_rows=5)]
    assert [s for s, _ in rows] == [0, 5, 10, 15, 20]
    np.testing.assert_array_equal(np.concatenate([b for _, b in rows]), exact)
    np.testing.assert_array_equal(scores.total(rows=slice(3, 7)), exact[3:7])
