"""Megatron-core RAMP pretraining (installed as ``ramp.pretrain``): supervised training on verified search
trajectories, from and back to Hugging Face Qwen2 checkpoints.

    ramp pretrain prepare --trajectories runs/trajectories --output runs/pretrain/shards --tokenizer HF_DIR
    ramp pretrain convert hf-to-mcore --hf HF_DIR --out runs/pretrain/mcore [--tp N]
    ramp pretrain check-conversion --hf HF_DIR [--tp N]
    ramp pretrain train --config configs/pretrain.yaml [--set model.hf=HF_DIR --set train.steps=...]
    ramp pretrain launch --config configs/pretrain.yaml [--dry-run]      # torchrun (1 node) + Slurm script
    ramp pretrain convert mcore-to-hf --ckpt runs/pretrain/checkpoints --hf-config HF_DIR --out runs/sft-hf

``prepare`` (:mod:`.prepare`) is a Beam job (any runner, any Beam filesystem) writing packed megatron
``IndexedDataset`` shards of tokens plus a parallel loss mask (1 on assistant tokens only), with a manifest
of the tokenizer/template/protocol fingerprint that ``train`` checks. ``train`` (:mod:`.train`) runs one
process per rank; ``launch`` (:mod:`.launch`) starts them. ``convert`` (:mod:`.convert`) maps Qwen2
weights to megatron's layout and back (exact round trip).
"""
