"""Hugging Face sharded checkpoints: ``hf_index`` reads ``*.index.json`` + shards as one index,
``hf_shards`` splits an output into shards by huggingface_hub's documented rules."""
