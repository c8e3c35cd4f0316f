"""Orbax checkpoints (orbax-checkpoint, JAX's checkpointing library), read through tensorstore (optional extra)."""
