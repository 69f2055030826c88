"""Run megatron-core on a CPU-only torch.

megatron-core allocates with ``device=torch.cuda.current_device()`` (RoPE, attention buffers, TP
gathers, DDP buffers, checkpoint saving); on a CPU-only torch that call raises. When CUDA is absent,
:func:`install` makes ``torch.cuda.current_device`` return the CPU device and ``torch.cuda.synchronize``
a no-op: two torch functions, no megatron internals. With a GPU it changes nothing.
"""

from __future__ import annotations

import torch

_installed = False


def install() -> bool:
    """Patch the two torch.cuda functions when CUDA is unavailable; returns whether the shim is active."""
    global _installed
    if torch.cuda.is_available():
        return False
    if not _installed:
        torch.cuda.current_device = lambda: torch.device("cpu")  # type: ignore[assignment,return-value]
        torch.cuda.synchronize = lambda device=None: None
        _installed = True
    return True
