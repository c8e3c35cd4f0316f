"""PyTorch checkpoints: ``torch.save`` zip files, legacy (pre-1.6) files, bare pickles, and the ``.pt`` writer.

``safepickle`` is the allowlist unpickler every pickle goes through; ``torch_common`` turns its inert
result into a scope-path index.
"""
