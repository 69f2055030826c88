"""A simulated search engine (ZeroSearch, arXiv 2505.04588): a language model writes the documents.

``SimulatedRetriever`` answers ``search(queries, k)`` like any :class:`~ramp.retrieval.base.Retriever`, but
each query's ``k`` documents are written by a generation backend prompted to be *useful* (they state what
the query asks for) or *noisy* (on the query's topic, without what it asks for). Which one is drawn per
query with the noise probability ``p``: ``noise.p_start`` until the RL trainer calls :meth:`set_step`,
then ZeroSearch's curriculum (:func:`noise_probability`). The draw and the generation
are seeded by (``seed``, step, query), so a rerun returns the same documents, and one query asked twice in
a step gets the same answer, as from a real engine.

Backends: ``openai`` (any OpenAI-compatible endpoint, e.g. ``vllm serve`` of ZeroSearch's simulators; chat
messages) or ``hf`` (a local checkpoint, e.g. the small simulator ``ramp sim train`` fine-tunes on
(query -> real documents) pairs; the prompt rendered with its chat template). The model writes one document
per line, ``Doc 1 (Title: T): text``; a generated document has no corpus id, so its id is
``sim:<hash of its text>``.

Exclusions: a sample's own passage cannot be excluded by id. With ``documents`` (the documents the
simulator was trained on; ``ramp sim train`` puts them beside the model as ``sim-documents.jsonl``), a
generated document that reproduces an excluded one (a run of ``leak_ngram`` words in common) is dropped.
Without it, a search with exclusions is refused, unless ``unguarded_exclusions`` says to go on knowingly.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field, model_validator

from ramp.config import StrictModel
from ramp.retrieval.base import Hit, check_search_args
from ramp.seeding import stable_seed
from ramp.text import normalize

DOCUMENTS_FILE = "sim-documents.jsonl"  # beside a trained simulator: what it was trained on
Kind = Literal["useful", "noisy"]

_GUIDANCE: dict[Kind, str] = {
    "useful": "Useful documents state the facts the query asks for.",
    "noisy": "Noisy documents are about the query's topic but do not state what it asks for.",
}
_DOC_START = re.compile(r"^\s*Doc\s*(\d+)\s*(?:\(\s*Title:\s*(?P<title>[^)]*)\))?\s*:?\s*(?P<text>.*)$")


class NoiseConfig(StrictModel):
    """The noise curriculum: p(t) = p_start + (base^(t/T) - 1) / (base - 1) * (p_end - p_start)."""

    p_start: float = Field(default=0.0, ge=0, le=1)
    p_end: float = Field(default=0.5, ge=0, le=1)
    base: float = Field(default=4.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> NoiseConfig:
        if self.base == 1:
            raise ValueError("noise.base must not be 1 (the curriculum divides by base - 1)")
        return self


class SimulatorConfig(StrictModel):
    """``retriever.simulator``: the model that writes documents (``retriever.kind: simulated``)."""

    backend: Literal["openai", "hf"] = "openai"
    model: str = ""  # openai: the served model's name; hf: a local checkpoint (`ramp sim train`'s policy/)
    base_url: str = "http://127.0.0.1:8001/v1"  # openai
    api_key_env: str = "OPENAI_API_KEY"  # openai: the env var holding the key (unset: no auth header)
    max_concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    device: str = "auto"  # hf
    batch_size: int = Field(default=16, ge=1)  # hf
    max_new_tokens: int = Field(default=512, ge=1)
    temperature: float = Field(default=0.0, ge=0)  # 0: greedy
    doc_words: int = Field(default=30, ge=1)  # the length asked for in the prompt
    noise: NoiseConfig = NoiseConfig()
    seed: int = 0
    documents: str | None = None  # JSONL of {id, title, text} the simulator knows (hf: sim-documents.jsonl)
    leak_ngram: int = Field(default=8, ge=1)  # words in common that make a document reproduce another
    unguarded_exclusions: bool = False  # search with exclusions although nothing can enforce them

    @model_validator(mode="after")
    def _check(self) -> SimulatorConfig:
        if self.backend == "hf" and not self.model:
            raise ValueError("simulator.backend 'hf' needs simulator.model (a local checkpoint directory)")
        return self


def simulator_messages(query: str, k: int, kind: Kind, doc_words: int) -> list[dict[str, str]]:
    """The prompt of one simulated search (ZeroSearch's: k useful or noisy documents of about
    ``doc_words`` words for the query, labelled output)."""
    label = kind.capitalize()
    user = (
        f"Write {k} {kind} documents for the search query below, each about {doc_words} words. "
        f"{_GUIDANCE[kind]} Write one document per line as `Doc 1 (Title: title): text`, nothing else.\n\n"
        f"Query: {query}\n{label} Output:"
    )
    return [{"role": "system", "content": "You are a web search engine."}, {"role": "user", "content": user}]


def format_documents(documents: Sequence[tuple[str, str]]) -> str:
    """``(title, text)`` documents in the simulator's output format (what ``ramp sim train`` teaches)."""
    return "\n".join(
        f"Doc {i} (Title: {' '.join(title.split())}): {' '.join(text.split())}"
        for i, (title, text) in enumerate(documents, start=1)
    )


def parse_documents(text: str, k: int) -> list[tuple[str, str]]:
    """The first ``k`` ``(title, text)`` documents of a simulator's output: lines opening with ``Doc N``
    start a document, other lines continue it; output without any ``Doc`` line is one document."""
    documents: list[list[str]] = []
    for line in text.splitlines():
        opened = _DOC_START.match(line)
        if opened:
            documents.append([(opened.group("title") or "").strip(), opened.group("text").strip()])
        elif line.strip() and documents:
            documents[-1][1] = f"{documents[-1][1]} {line.strip()}".strip()
        elif line.strip():
            documents.append(["", line.strip()])
    return [(title, body) for title, body in documents if body][:k]


def document_id(title: str, text: str) -> str:
    """A generated document's id: ``sim:`` and a hash of its title and text."""
    return "sim:" + hashlib.blake2b(f"{title}\x1f{text}".encode(), digest_size=8).hexdigest()


def reproduces(generated: str, excluded: str, ngram: int) -> bool:
    """True when ``generated`` repeats ``excluded``: a run of ``ngram`` normalised words in common (all of
    ``excluded`` when it is shorter)."""
    words, source = normalize(generated, "ramp").split(), normalize(excluded, "ramp").split()
    if not source:
        return False
    if len(source) < ngram:
        return f" {' '.join(source)} " in f" {' '.join(words)} "
    runs = {tuple(source[i : i + ngram]) for i in range(len(source) - ngram + 1)}
    return any(tuple(words[i : i + ngram]) in runs for i in range(len(words) - ngram + 1))


def load_documents(path: str | Path) -> dict[str, str]:
    """``id -> title + text`` of a documents JSONL (``ramp sim prepare``'s ``documents.jsonl``)."""
    texts: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                texts[str(row["id"])] = f"{row.get('title', '')} {row['text']}".strip()
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{number}: not a document row {{id, title, text}} ({err})") from None
    return texts


def check_simulator(config: SimulatorConfig, timeout_s: float = 5.0) -> str | None:
    """What is wrong with the simulator's location (None: nothing): an hf checkpoint that is not there, or
    an endpoint that does not answer."""
    if config.backend == "hf":
        if (Path(config.model) / "config.json").is_file():
            return None
        return (
            f"simulator model {config.model} is not a checkpoint directory: train one with "
            "`ramp sim train` or give the right retriever.simulator.model"
        )
    try:  # any HTTP answer means an endpoint is listening
        httpx.get(f"{config.base_url.rstrip('/')}/models", timeout=timeout_s)
    except (httpx.HTTPError, httpx.InvalidURL) as err:
        return (
            f"simulator endpoint {config.base_url} is not reachable ({type(err).__name__}): start one "
            "(e.g. `vllm serve MODEL`) or give the right retriever.simulator.base_url"
        )
    return None


def noise_probability(step: int, total_steps: int, p_start: float, p_end: float, base: float) -> float:
    """ZeroSearch's curriculum: the probability that a simulated search returns noisy documents at ``step``
    of ``total_steps``, ``p_start + (base**(step/total_steps) - 1) / (base - 1) * (p_end - p_start)``
    (ZeroSearch: base 4, p_start 0, p_end 0.5); ``p_end`` from ``total_steps`` on."""
    if total_steps < 1 or step < 0:
        raise ValueError(f"need step >= 0 and total_steps >= 1, got step {step} of {total_steps}")
    if base <= 0 or base == 1:
        raise ValueError(f"base must be > 0 and != 1, got {base}")
    progress = min(step / total_steps, 1.0)
    return p_start + (base**progress - 1) / (base - 1) * (p_end - p_start)


class SimulatedRetriever:
    """The :class:`~ramp.retrieval.base.Retriever` interface over a document-writing model."""

    def __init__(self, config: SimulatorConfig, backend: Any = None) -> None:
        # ramp.agent imports ramp.retrieval, so its backends are imported here, when one is built.
        from ramp.agent.backends import build_backend
        from ramp.agent.config import BackendConfig, HFBackendConfig, OpenAIBackendConfig

        self.config = config
        if backend is None:
            backend_config = BackendConfig(
                kind=config.backend,
                openai=OpenAIBackendConfig(
                    base_url=config.base_url,
                    model=config.model,
                    api_key_env=config.api_key_env,
                    max_concurrency=config.max_concurrency,
                    timeout_s=config.timeout_s,
                    max_retries=config.max_retries,
                ),
                hf=HFBackendConfig(model=config.model, device=config.device, batch_size=config.batch_size),
            )
            backend = build_backend(backend_config)
        self.backend = backend
        self.step = 0
        self.noise_probability = config.noise.p_start
        documents = config.documents
        if documents is None and config.backend == "hf" and (Path(config.model) / DOCUMENTS_FILE).is_file():
            documents = str(Path(config.model) / DOCUMENTS_FILE)
        self.known_documents = load_documents(documents) if documents else None
        self.counts = {"useful": 0, "noisy": 0, "dropped_reproductions": 0}

    def set_step(self, step: int, total_steps: int) -> float:
        """Follow the noise curriculum: ``p`` for training step ``step`` of ``total_steps`` (returned)."""
        noise = self.config.noise
        self.step = step
        self.noise_probability = noise_probability(step, total_steps, noise.p_start, noise.p_end, noise.base)
        return self.noise_probability

    def kind_of(self, query: str, k: int) -> Kind:
        """Useful or noisy documents for ``query`` now: drawn with the noise probability, seeded."""
        draw = random.Random(stable_seed(self.config.seed, "noise", self.step, k, query)).random()
        return "noisy" if draw < self.noise_probability else "useful"

    def search(
        self,
        queries: Sequence[str],
        k: int = 5,
        exclude_doc_ids: Sequence[Collection[str]] | None = None,
    ) -> list[list[Hit]]:
        """``k`` generated hits per query (fewer when the model writes fewer or some reproduce an
        excluded document), best first."""
        from ramp.agent.backends.base import GenerationRequest
        from ramp.agent.protocol import encode_prompt

        check_search_args(queries, k, exclude_doc_ids)
        excluded = [set(ids) for ids in exclude_doc_ids] if exclude_doc_ids else [set() for _ in queries]
        if any(excluded) and self.known_documents is None and not self.config.unguarded_exclusions:
            raise ValueError(
                "a simulated search engine cannot exclude documents by id and knows no documents to check "
                "against: give retriever.simulator.documents (what the simulator was trained on), or set "
                "retriever.simulator.unguarded_exclusions=true to search without the leak guard"
            )
        tokenizer = getattr(self.backend, "tokenizer", None)
        requests, kinds = [], []
        for query in queries:
            kind = self.kind_of(query, k)
            kinds.append(kind)
            messages = simulator_messages(query, k, kind, self.config.doc_words)
            prompt: dict[str, Any] = (
                {"prompt_ids": encode_prompt(messages, tokenizer)}
                if tokenizer is not None
                else {"messages": messages}
            )
            seed = stable_seed(self.config.seed, "documents", self.step, k, kind, query) % 2**31
            requests.append(
                GenerationRequest(
                    **prompt,
                    max_new_tokens=self.config.max_new_tokens,
                    temperature=self.config.temperature,
                    seed=seed,
                )
            )
        results = self.backend.generate(requests) if requests else []
        out: list[list[Hit]] = []
        for kind, result, hidden in zip(kinds, results, excluded, strict=True):
            self.counts[kind] += 1
            documents = parse_documents(result.text, k)
            kept = [(t, x) for t, x in documents if not self._reproduces_excluded(f"{t} {x}", hidden)]
            self.counts["dropped_reproductions"] += len(documents) - len(kept)
            out.append([Hit(document_id(t, x), t, x, float(len(kept) - i)) for i, (t, x) in enumerate(kept)])
        return out

    def _reproduces_excluded(self, text: str, hidden: set[str]) -> bool:
        if not hidden or self.known_documents is None:
            return False
        return any(
            reproduces(text, self.known_documents[doc_id], self.config.leak_ngram)
            for doc_id in hidden
            if doc_id in self.known_documents
        )

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()
