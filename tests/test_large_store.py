"""Large stores: streamed safetensors writing, memory-mapped reading, and top-k without loading the scores."""

from __future__ import annotations

import numpy as np
from safetensors.numpy import load_file

from lingtrace.analysis.common import SummedMatrix
from lingtrace.analysis.topk import top_k
from lingtrace.influence import store
from lingtrace.io import write_json


def _brute_top_k(matrix: np.ndarray, k: int, largest: bool):
    key = -matrix if largest else matrix
    idx = np.stack([np.lexsort((np.arange(matrix.shape[1]), row))[:k] for row in key])
    return idx, np.take_along_axis(matrix, idx, 1)


def _write_store(tmp_path, mats: dict[int, np.ndarray]):
    n_test, n_train = next(iter(mats.values())).shape
    d = tmp_path / "influence"
    store.write_axes(d, [f"z{i}" for i in range(n_train)], [f"t{i}" for i in range(n_test)])
    for e, m in mats.items():
        # streamed in blocks of 7 rows, as the stage merges parts
        store.write_streaming(
            store.epoch_file(d, e),
            {"scores": (m.shape, np.float32)},
            lambda name, write, m=m: [write(m[a : a + 7]) for a in range(0, m.shape[0], 7)],
        )
    write_json(d / "meta.json", {"mode": "cosine", "epochs": list(mats), "epochs_done": list(mats), "complete": True})
    return d


def test_streamed_store_reads_back_and_top_k_on_memmap_equals_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    n_test, n_train, k = 37, 5000, 100
    mats = {}
    for e in (1, 2):
        m = rng.normal(size=(n_test, n_train)).astype(np.float32)
        m[:, 10:20] = m[:, 30:31]  # ties across the k-th place are broken by column order
        mats[e] = m
    d = _write_store(tmp_path, mats)
    np.testing.assert_array_equal(load_file(str(store.epoch_file(d, 1)))["scores"], mats[1])  # a valid safetensors file
    scores = store.load_scores(d)
    mm = scores.epoch(1)
    assert isinstance(mm, np.memmap)
    for largest in (True, False):
        on_disk = top_k(mm, k, largest=largest, block_rows=8)
        in_memory = top_k(np.array(mats[1]), k, largest=largest, block_rows=1000)
        ref_idx, ref_val = _brute_top_k(mats[1].astype(np.float64), k, largest)
        np.testing.assert_array_equal(on_disk.indices, in_memory.indices)
        np.testing.assert_array_equal(on_disk.indices, ref_idx)
        np.testing.assert_allclose(on_disk.scores, ref_val)
        # the summed score, read lazily block by block
        summed = top_k(SummedMatrix([scores.epoch(e) for e in scores.epochs]), k, largest=largest, block_rows=5)
        total = mats[1].astype(np.float64) + mats[2].astype(np.float64)
        np.testing.assert_array_equal(summed.indices, _brute_top_k(total, k, largest)[0])
    np.testing.assert_allclose(scores.total(), mats[1].astype(np.float64) + mats[2])
