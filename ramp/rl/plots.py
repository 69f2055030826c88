"""The reward curve of an RL run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure


def plot_rewards(history: Sequence[dict[str, float]], path: Path) -> None:
    """Total and answer reward per step, and the answer reward per mask count."""
    steps = [h["step"] for h in history]
    fig = Figure(figsize=(7, 4))  # no pyplot: no backend, no global figure state
    ax = fig.subplots()
    ax.plot(steps, [h["reward/total"] for h in history], label="total", linewidth=2)
    ax.plot(steps, [h["reward/answer"] for h in history], label="answer")
    for key in sorted(k for k in history[-1] if k.startswith("reward/k")):
        ax.plot(steps, [h.get(key, float("nan")) for h in history], label=key.split("/")[1], alpha=0.6)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_title("DAPO reward")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
