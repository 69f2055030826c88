"""The heavy engines ``ramp`` imports on first use: each has its one importer here.

Every other import sits at the top of its module. These cannot: the core library imports without Beam,
Megatron or vLLM (``tests/test_import_light.py``), and a command or a Beam worker must not pay seconds
for an engine its configuration does not use (spaCy: one span extractor; datasets: hub inputs; FAISS,
torch and transformers: the dense retriever's index and encoder).
Two more load on demand where they are used: Java and Anserini in :mod:`ramp.retrieval.jvm`, and the
hf backend (torch, transformers) in :mod:`ramp.agent.backends`.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def megatron(module: str) -> ModuleType:
    """``megatron.core.<module>``, e.g. ``megatron("dist_checkpointing")``."""
    return importlib.import_module(f"megatron.core.{module}")


def beam(module: str) -> ModuleType:
    """``apache_beam.<module>``, e.g. ``beam("io.filesystems")``."""
    return importlib.import_module(f"apache_beam.{module}")


def vllm(module: str = "") -> ModuleType:
    """``vllm`` or ``vllm.<module>`` (the optional ``vllm`` extra)."""
    try:
        return importlib.import_module(f"vllm.{module}" if module else "vllm")
    except ImportError as err:
        raise ImportError(
            "the vllm backend needs vLLM, which is not installed: pip install 'ramp[vllm]' "
            "(or use backend.kind=hf, or backend.kind=openai against a `vllm serve` endpoint)"
        ) from err


def spacy() -> ModuleType:
    """``spacy`` (the spaCy span extractor)."""
    return importlib.import_module("spacy")


def datasets() -> ModuleType:
    """``datasets`` (QA sets read from the Hugging Face hub)."""
    return importlib.import_module("datasets")


def faiss() -> ModuleType:
    """``faiss`` (dense indexes)."""
    return importlib.import_module("faiss")


def torch() -> ModuleType:
    """``torch`` (the dense retriever's encoder)."""
    return importlib.import_module("torch")


def transformers() -> ModuleType:
    """``transformers`` (the dense retriever's encoder)."""
    return importlib.import_module("transformers")
