"""Pure training logic for Megatron-core RAMP pretraining: token shards with loss masks, packing,
the Qwen2 <-> megatron-core weight map, model construction and the CPU shim for megatron."""
