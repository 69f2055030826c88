"""RAMP: Retrieval-Augmented Mask Prediction.

The core library. Importable without Beam, Megatron or Java: those engines load on first use, each in
one place (:mod:`ramp.engines`, :mod:`ramp.retrieval.jvm`).
"""

__version__ = "0.1.0"
