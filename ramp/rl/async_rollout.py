"""Asynchronous RL (``trainer.mode: async``, as ASearcher/AReaL train): generation and training overlap.

A producer thread runs generation batches on the rollout engine (its own copy of the weights) and puts
them, scored and filtered, into a queue of ``trainer.queue_size`` batches; the trainer takes whole groups
from it while the producer samples the next ones. It stands in for the
:class:`~ramp.rl.rollout.RolloutWorker` inside :class:`~ramp.rl.trainer.RLTrainer`, whose step is
unchanged:

- Versions: the policy version is the number of weight pushes; every episode records the version whose
  weights sampled it (``Episode.version``). A push is a copy of the weights, loaded by the producer
  before its next batch, so a batch is sampled by one version throughout.
- Staleness: when the trainer takes a batch (or a group carried over from the previous step), episodes
  more than ``trainer.max_staleness`` versions behind its own are dropped and counted
  (``async/dropped_stale``); every trained episode is within the bound (``async/staleness``).
- The objective: ``algorithm.policy_loss: decoupled`` clips against the proximal policy (the trainer's
  log-probs before the update) and weights by pi_prox / pi_behav (the rollout's recorded log-probs).

Batch b is seeded from (trainer seed, b) as the synchronous step b's, so the episodes of a batch do not
depend on thread timing given its version; which version a batch gets, and so what is dropped, does.
One process only (no ranks).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import torch

from ramp.rl.config import RLConfig
from ramp.rl.core_algos import DynamicSamplingExhausted, groups_with_spread
from ramp.rl.episodes import Episode, split_views
from ramp.rl.metrics import StepMetrics
from ramp.rl.rollout import RolloutWorker, add_episode_metrics


class AsyncRollout:
    """A producer thread over a :class:`RolloutWorker`, with the worker's ``generate``/``sync_weights``/
    ``close``. ``counts``: episodes ``produced`` (kept by dynamic sampling), ``trained`` and ``dropped``
    (stale); the rest wait in the queue or the carry-over."""

    def __init__(self, worker: RolloutWorker, config: RLConfig) -> None:
        if worker.dist.world > 1:
            raise ValueError("trainer.mode async runs in one process (no ranks)")
        self.worker, self.config = worker, config
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=config.trainer.queue_size)
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.version = 0  # weight pushes so far: the trainer's policy version
        self.pending: tuple[int, dict[str, torch.Tensor]] | None = None
        self.carry: list[Episode] = []  # whole groups taken from the queue, not trained yet
        self.counts = {"produced": 0, "trained": 0, "dropped": 0}
        self.thread: threading.Thread | None = None

    def sync_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """A new policy version: a copy of its weights, loaded by the producer before its next batch."""
        copy = {k: v.detach().clone() for k, v in state_dict.items()}
        with self.lock:
            self.version += 1
            self.pending = (self.version, copy)

    def generate(self, step: int, metrics: StepMetrics) -> list[Episode]:
        """``trainer.train_batch_size`` whole groups within the staleness bound, as training sequences."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._produce, args=(step,), daemon=True)
            self.thread.start()
        target, limit = self.config.trainer.train_batch_size, self.config.algorithm.max_num_gen_batches
        began, batches = time.perf_counter(), 0
        kept = self._fresh(self.carry, metrics)
        while len({e.group_id for e in kept}) < target:
            if limit and batches >= limit:
                raise DynamicSamplingExhausted(
                    f"{batches} generation batches kept fewer than {target} groups"
                )
            item = self.queue.get()
            if isinstance(item, BaseException):
                raise item
            episodes, batch_metrics = item
            metrics.merge(batch_metrics)
            kept += self._fresh(episodes, metrics)
            batches += 1
        groups = list(dict.fromkeys(e.group_id for e in kept))[:target]
        train = [e for e in kept if e.group_id in groups]
        self.carry = [e for e in kept if e.group_id not in groups]
        self.counts["trained"] += len(train)
        metrics.add("async/staleness", sum(self.version - e.version for e in train), len(train))
        metrics.add("async/policy_version", self.version)
        metrics.add("async/wait_s", time.perf_counter() - began)
        metrics.add("train/gen_batches", batches)
        return split_views(train)

    def _fresh(self, episodes: list[Episode], metrics: StepMetrics) -> list[Episode]:
        stale = [e for e in episodes if self.version - e.version > self.config.trainer.max_staleness]
        self.counts["dropped"] += len(stale)
        metrics.add("async/dropped_stale", len(stale))
        return [e for e in episodes if self.version - e.version <= self.config.trainer.max_staleness]

    def _produce(self, first_batch: int) -> None:
        """Generation batches first_batch, first_batch + 1, ... until :meth:`close`; an error is queued."""
        algo, batch, loaded = self.config.algorithm, first_batch, self.version
        try:
            while not self.stop.is_set():
                with self.lock:
                    pending, self.pending = self.pending, None
                if pending is not None:
                    loaded = pending[0]
                    self.worker.sync_weights(pending[1])
                metrics = StepMetrics()
                episodes = self.worker.generate_batch(batch, 0, metrics)
                for e in episodes:
                    e.version = loaded
                kept = episodes
                if algo.filter_groups:
                    flags = groups_with_spread(
                        [e.filter_value(algo.filter_metric) for e in episodes], [e.group_id for e in episodes]
                    )
                    kept = [e for e, keep in zip(episodes, flags, strict=True) if keep]
                add_episode_metrics(metrics, episodes, kept, self.config)
                if self._put((kept, metrics)):
                    with self.lock:
                        self.counts["produced"] += len(kept)
                batch += 1
        except BaseException as err:  # the trainer re-raises it from generate()
            self._put(err)

    def _put(self, item: Any) -> bool:
        """Queue ``item`` (waiting while the queue is full); False when stopped first."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        """Stop the producer (after its current batch) and close the worker."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        self.worker.close()
