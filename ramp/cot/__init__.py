"""Multi-agent chain-of-thought trajectory building (MaskSearch's recipe): roles (a turn policy of the
agent's loop), teachers, drafts, verification. The Beam job is ``pipelines/cot_builder.py``; the command
``ramp data cot``."""
