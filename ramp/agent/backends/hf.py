"""In-process transformers backend: a batched decode loop with a prefix KV cache across calls.

Requests are grouped by sampling settings (temperature, top_p) and run in batches of ``batch_size``;
rows with different stop strings and budgets share a batch and leave it independently. The loop calls
the model directly with an explicit attention mask (0 on padding anywhere, so a row may have holes where
it stopped early or where a shorter insert was padded) and explicit position ids (the count of the row's
real tokens so far), which lets a later call continue any row:

Prefix cache (as vLLM's): after each call the backend keeps the batches' KV caches with the real tokens
each row holds. A later request whose ``prompt_ids`` extend such a row (prompt + generated ids of an
earlier call, e.g. a rollout after its result block was appended) gathers that row's keys/values and
prefills only the new tokens. Requests without a cached prefix prefill from scratch in their own
batches. The store holds only the last call's batches (an unrelated call drops it) and is skipped when
larger than ``prefix_cache_bytes``. Cache layers append into storage of doubling capacity rather than
concatenating per step (plain full-attention models only; others run without reuse).

Per step: the ``processors_for_batch`` logits processors (they see the left-padded sequences so far, as
in ``generate``), then temperature and top-p; the recorded log-prob is the chosen token's under that final
distribution (the one it was sampled from; temperature 1 when greedy), then argmax or a multinomial draw
from the row's own generator, seeded by its request's seed: a row samples the same tokens alone or in
any batch. A row's stop strings are checked only when its new token can end one (a per-vocabulary table
of tokens containing a stop string's last character). ``update_weights`` copies new weights into the model
in place and drops the prefix cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, LogitsProcessor
from transformers.cache_utils import DynamicLayer

from ramp.agent.backends.base import GenerationRequest, GenerationResult, GenerationStop, truncate_at_stop
from ramp.agent.config import HFBackendConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_NO_SOURCE = -1


@dataclass
class _CachedBatch:
    """A finished batch's KV cache: row r holds ``sequences[r]`` in the columns where ``mask[r]`` is 1."""

    cache: DynamicCache
    mask: torch.Tensor  # (rows, columns), long, on the model's device
    sequences: list[list[int]]


@dataclass
class HFBackendStats:
    calls: int = 0
    batches: int = 0
    prefilled_tokens: int = 0  # tokens run through the model as prompt (not generated)
    reused_tokens: int = 0  # prompt tokens taken from the prefix cache instead
    generated_tokens: int = 0


@dataclass
class _Row:
    request: GenerationRequest
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    done: bool = False


def first_stop_token(ids: list[int], stops: Sequence[str], tokenizer: Any) -> int | None:
    """Smallest n such that ``decode(ids[:n])`` contains a stop string (binary search), else None."""
    decode = lambda n: tokenizer.decode(ids[:n], skip_special_tokens=False)  # noqa: E731
    if not stops or not any(s in decode(len(ids)) for s in stops):
        return None
    low, high = 1, len(ids)
    while low < high:
        mid = (low + high) // 2
        if any(s in decode(mid) for s in stops):
            high = mid
        else:
            low = mid + 1
    return low


def _top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches ``top_p`` (as transformers' warper)."""
    sorted_scores, order = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p)
    remove[..., -1:] = False
    return scores.masked_fill(remove.scatter(1, order, remove), float("-inf"))


class HFBackend:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 16,
        device: str | None = None,
        prefix_cache_bytes: int = 4 << 30,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.prefix_cache_bytes = prefix_cache_bytes
        if device is not None and device != "auto":
            self.model.to(device)
        self.device = next(model.parameters()).device
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        self.eos_ids = set(eos_ids) | (
            {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.max_length: int | None = getattr(model.config, "max_position_embeddings", None)
        self.stats = HFBackendStats()
        self._store: list[_CachedBatch] = []
        self._stop_enders: dict[frozenset[str], torch.Tensor] = {}

    @classmethod
    def from_config(cls, config: HFBackendConfig) -> HFBackend:
        if not config.model:
            raise ValueError("backend.hf.model is empty: give a local path or hub name")
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = _DTYPES.get(config.dtype, "auto")
        tokenizer = AutoTokenizer.from_pretrained(config.model)
        model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype).eval()
        return cls(
            model,
            tokenizer,
            batch_size=config.batch_size,
            device=device,
            prefix_cache_bytes=int(config.prefix_cache_gb * 2**30),
        )

    def clear_cache(self) -> None:
        """Drop the prefix cache (the next call prefills everything)."""
        self._store = []

    @torch.no_grad()
    def update_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy new weights (all or some of the model's ``state_dict`` keys) into the model in place, then
        drop the prefix cache, whose keys/values came from the old weights. Unknown keys raise."""
        unknown = sorted(set(state_dict) - set(self.model.state_dict()))
        if unknown:
            raise KeyError(f"update_weights: not parameters of the model: {unknown[:5]}")
        self.model.load_state_dict(state_dict, strict=False)
        self.clear_cache()

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        processors_for_batch: Callable[[list[GenerationRequest]], Sequence[LogitsProcessor]] | None = None,
    ) -> list[GenerationResult]:
        """Generate for every request, in batches.

        ``processors_for_batch(batch_requests)`` gives extra logits processors for one batch (rows in
        the order given); they act before temperature and top-p, and the log-probs include them.
        """
        for r in requests:
            if r.prompt_ids is None:
                raise ValueError("the hf backend needs prompt_ids (render messages with the chat template)")
        self.stats.calls += 1
        store, self._store = self._store, []
        sources = self._match(requests, store)
        results: list[GenerationResult | None] = [None] * len(requests)

        def key(i: int) -> tuple[int, float, float]:
            return (sources[i][0], requests[i].temperature, requests[i].top_p)

        new_store: list[_CachedBatch] = []
        for (entry_index, _, _), group in groupby(sorted(range(len(requests)), key=key), key=key):
            indices = list(group)
            for b in range(0, len(indices), self.batch_size):
                chunk = indices[b : b + self.batch_size]
                batch = [requests[i] for i in chunk]
                extra = processors_for_batch(batch) if processors_for_batch is not None else ()
                source = (store[entry_index], [sources[i][1] for i in chunk]) if entry_index >= 0 else None
                batch_results, cached = self._generate_batch(batch, extra, source)
                new_store.append(cached)
                for i, result in zip(chunk, batch_results, strict=True):
                    results[i] = result
        store.clear()  # free the old caches before keeping the new ones
        if sum(_cache_bytes(c.cache) for c in new_store) <= self.prefix_cache_bytes:
            self._store = new_store
        return [r for r in results if r is not None]

    def _match(
        self, requests: Sequence[GenerationRequest], store: list[_CachedBatch]
    ) -> list[tuple[int, int]]:
        """Per request, the (batch, row) of the store holding its longest proper prefix, or (-1, -1)."""
        by_key: dict[tuple[int, tuple[int, ...]], list[tuple[int, int]]] = {}
        for e, entry in enumerate(store):
            for row, seq in enumerate(entry.sequences):
                by_key.setdefault((len(seq), tuple(seq[-8:])), []).append((e, row))
        lengths = sorted({length for length, _ in by_key}, reverse=True)
        sources = []
        for request in requests:
            prompt = request.prompt_ids or []
            found = (_NO_SOURCE, _NO_SOURCE)
            for length in (n for n in lengths if 0 < n < len(prompt)):
                for e, row in by_key.get((length, tuple(prompt[max(0, length - 8) : length])), []):
                    if store[e].sequences[row] == prompt[:length]:
                        found = (e, row)
                        break
                if found[0] >= 0:
                    break
            sources.append(found)
        return sources

    def _stop_ender_table(self, stops: frozenset[str], vocab: int) -> torch.Tensor:
        """Per token id: can it complete one of ``stops`` (contains a last character, or partial bytes)."""
        table = self._stop_enders.get(stops)
        if table is None or len(table) < vocab:
            last_chars = {s[-1] for s in stops if s}
            known = min(vocab, len(self.tokenizer))
            texts = self.tokenizer.batch_decode([[i] for i in range(known)], skip_special_tokens=False)
            flags = [("\ufffd" in t) or any(c in t for c in last_chars) for t in texts]
            table = torch.tensor(flags + [True] * (vocab - known), dtype=torch.bool)
            self._stop_enders[stops] = table
        return table

    @torch.inference_mode()
    def _generate_batch(
        self,
        requests: list[GenerationRequest],
        extra: Sequence[LogitsProcessor],
        source: tuple[_CachedBatch, list[int]] | None,
    ) -> tuple[list[GenerationResult], _CachedBatch]:
        device, n = self.device, len(requests)
        prompts = [r.prompt_ids or [] for r in requests]
        if source is None:
            cache = _growing(DynamicCache(config=self.model.config))
            past_mask = torch.zeros((n, 0), dtype=torch.long, device=device)
            past_lengths = [0] * n
        else:
            entry, source_rows = source
            cache, past_mask = _select(entry, source_rows)
            past_lengths = [len(entry.sequences[r]) for r in source_rows]
        self.stats.batches += 1
        self.stats.reused_tokens += sum(past_lengths)
        new = [p[k:] for p, k in zip(prompts, past_lengths, strict=True)]
        self.stats.prefilled_tokens += sum(len(t) for t in new)

        # The new tokens, left-padded into one chunk so every row's last token is in the last column.
        chunk_width = max(len(t) for t in new)
        chunk = torch.full((n, chunk_width), self.pad_id, dtype=torch.long)
        chunk_mask = torch.zeros((n, chunk_width), dtype=torch.long)
        for row, tokens in enumerate(new):
            chunk[row, chunk_width - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
            chunk_mask[row, chunk_width - len(tokens) :] = 1
        past = torch.tensor(past_lengths, dtype=torch.long)
        positions = (past[:, None] + chunk_mask.cumsum(1) - 1).clamp(min=0)
        budget = max(r.max_new_tokens for r in requests)
        mask = torch.cat([past_mask, chunk_mask.to(device), past_mask.new_zeros((n, budget))], dim=1)
        columns = past_mask.shape[1] + chunk_width

        # What the logits processors see: the left-padded full sequences, one column per step.
        width = max(len(p) for p in prompts)
        sequences = torch.full((n, width + budget), self.pad_id, dtype=torch.long, device=device)
        for row, prompt in enumerate(prompts):
            sequences[row, width - len(prompt) : width] = torch.tensor(prompt, dtype=torch.long)

        first = requests[0]
        sampling = first.temperature > 0
        generators = []
        if sampling:
            for request in requests:
                generators.append(torch.Generator(device=device))
                generators[-1].manual_seed(request.seed)
        stops = frozenset(s for r in requests for s in r.stop)
        window = max((len(s) for s in stops), default=0) + 4
        rows = [_Row(r) for r in requests]
        cached_lengths = [k + len(t) for k, t in zip(past_lengths, new, strict=True)]
        count = torch.tensor(cached_lengths, dtype=torch.long)
        logits = self._forward(chunk.to(device), mask[:, :columns], positions, cache)
        for step in range(budget):
            scores = logits.float()
            current = sequences[:, : width + step]
            for processor in extra:
                scores = processor(current, scores)
            if sampling:
                scores = scores / first.temperature
                if first.top_p < 1.0:
                    scores = _top_p_filter(scores, first.top_p)
            logprobs = torch.log_softmax(scores, dim=-1)
            if sampling:
                probs = logprobs.exp()
                chosen = torch.cat(
                    [torch.multinomial(probs[row], 1, generator=g) for row, g in enumerate(generators)]
                )
            else:
                chosen = scores.argmax(dim=-1)
            finished = torch.tensor([r.done for r in rows], device=device)
            chosen = chosen.masked_fill(finished, self.pad_id)
            sequences[:, width + step] = chosen
            chosen_list = chosen.tolist()
            chosen_logprobs = logprobs.gather(1, chosen[:, None]).squeeze(1).tolist()
            enders = (
                self._stop_ender_table(stops, scores.shape[1])[chosen.cpu()].tolist()
                if stops
                else [False] * n
            )
            feed = [not r.done for r in rows]  # rows finishing now still feed their last token
            for i, state in enumerate(rows):
                if state.done:
                    continue
                state.ids.append(chosen_list[i])
                state.logprobs.append(chosen_logprobs[i])
                state.done = (
                    chosen_list[i] in self.eos_ids
                    or len(state.ids) >= state.request.max_new_tokens
                    or (enders[i] and self._stopped(state, window))
                )
            if all(r.done for r in rows):
                break
            fed = torch.tensor(feed, dtype=torch.long)
            mask[:, columns] = fed.to(device)
            columns += 1
            logits = self._forward(chosen[:, None], mask[:, :columns], count[:, None], cache)
            count += fed
            cached_lengths = [c + int(f) for c, f in zip(cached_lengths, feed, strict=True)]
        self.stats.generated_tokens += sum(len(r.ids) for r in rows)
        cached = _CachedBatch(
            cache,
            mask[:, :columns],
            [(p + r.ids)[:c] for p, r, c in zip(prompts, rows, cached_lengths, strict=True)],
        )
        return [self._result(r.ids, r.logprobs, r.request) for r in rows], cached

    def _forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache
    ) -> torch.Tensor:
        """Next-token logits (last column) after appending ``input_ids`` to ``cache``."""
        output = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions.to(self.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return output.logits[:, -1]

    def _stopped(self, row: _Row, window: int) -> bool:
        tail = self.tokenizer.decode(row.ids[-window:], skip_special_tokens=False)
        return any(s in tail for s in row.request.stop)

    def _result(self, ids: list[int], logprobs: list[float], request: GenerationRequest) -> GenerationResult:
        finish: GenerationStop = "length"
        end = min(len(ids), request.max_new_tokens)
        eos_at = next((i for i, t in enumerate(ids[:end]) if t in self.eos_ids), None)
        if eos_at is not None:
            end, finish = eos_at + 1, "eos"
        stop_end = first_stop_token(ids[:end], request.stop, self.tokenizer)
        if stop_end is not None:
            end, finish = stop_end, "stop"
        kept = ids[:end]
        text_ids = kept[:-1] if finish == "eos" else kept
        text, stop_string = truncate_at_stop(
            self.tokenizer.decode(text_ids, skip_special_tokens=False),
            request.stop if finish == "stop" else (),
        )
        return GenerationResult(
            text=text, token_ids=kept, logprobs=logprobs[:end], finish_reason=finish, stop_string=stop_string
        )


def _select(entry: _CachedBatch, rows: list[int]) -> tuple[DynamicCache, torch.Tensor]:
    """A new cache with ``rows`` of ``entry`` (in that order), without the columns none of them uses."""
    index = torch.tensor(rows, dtype=torch.long, device=entry.mask.device)
    mask = entry.mask.index_select(0, index)
    used = mask.any(dim=0).nonzero().squeeze(1)
    layers = [
        (
            layer.keys.index_select(0, index).index_select(2, used),
            layer.values.index_select(0, index).index_select(2, used),
        )
        for layer in _layers(entry.cache)
    ]
    return _growing(DynamicCache(layers)), mask.index_select(1, used)


def _cache_bytes(cache: DynamicCache) -> int:
    """Bytes held by a cache of plain full-attention layers; unbounded for any other kind (never stored)."""
    if not all(isinstance(layer, _GrowingLayer) for layer in _layers(cache)):
        return 2**62
    return sum(
        t.untyped_storage().nbytes()
        for layer in _layers(cache)
        if layer.is_initialized
        for t in (layer.keys, layer.values)
    )


def _layers(cache: DynamicCache) -> list[Any]:
    return list(cache.layers)


class _GrowingLayer(DynamicLayer):
    """A full-attention cache layer that appends into storage of doubling capacity (no copy per step)."""

    _length = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.keys, self.values = key_states[..., :0, :], value_states[..., :0, :]
            self._stores = (self.keys, self.values)
        length = self._length
        end = length + key_states.shape[-2]
        if end > self._stores[0].shape[-2]:
            capacity = max(end, 2 * length, 64)
            key_store, value_store = (
                torch.cat(
                    [
                        old[..., :length, :],
                        new.new_empty((*new.shape[:-2], capacity - length, new.shape[-1])),
                    ],
                    dim=-2,
                )
                for old, new in zip(self._stores, (key_states, value_states), strict=True)
            )
            self._stores = (key_store, value_store)
        keys, values = self._stores
        keys[..., length:end, :] = key_states
        values[..., length:end, :] = value_states
        self.keys, self.values, self._length = keys[..., :end, :], values[..., :end, :], end
        return keys[..., :end, :], values[..., :end, :]


def _growing(cache: DynamicCache) -> DynamicCache:
    """``cache`` with its plain full-attention layers (empty or filled) replaced by growing ones."""
    if all(type(layer) is DynamicLayer for layer in _layers(cache)):
        old = _layers(cache)
        cache.layers = [_GrowingLayer() for _ in old]
        for new, layer in zip(_layers(cache), old, strict=True):
            if layer.is_initialized:
                new.update(layer.keys, layer.values)
    return cache
