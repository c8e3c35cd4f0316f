"""Flax msgpack checkpoints (``flax.serialization.to_bytes``), read lazily without the msgpack library."""
