"""PaddlePaddle ``paddle.save`` state dicts (``.pdparams``, ``.pdopt``), read lazily through the allowlist unpickler."""
