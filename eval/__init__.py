"""Evaluation entry points (installed as ``ramp.eval``): the harness (:mod:`ramp.eval.run`) and run
comparison (:mod:`ramp.eval.compare`). Loaders and scoring live in :mod:`ramp.qa`."""
