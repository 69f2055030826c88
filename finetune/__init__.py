"""Fine-tuning stage entries (imported as ``ramp.finetune``): the DAPO RL trainer."""
