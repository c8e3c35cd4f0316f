"""The S3 tree of ``scan_vs_picklescan.sh``: what a folder of downloaded models holds, written by the real torch.

    .venv/bin/python bench/make_models_tree.py DIR
"""
from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import save_file


def main(out: str) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    for i in range(3):
        os.makedirs(f"{out}/model{i}", exist_ok=True)
        state = {f"layers.{j}.{k}": torch.randn(512, 512) for j in range(24) for k in ("q", "k", "v", "o")}
        torch.save(state, f"{out}/model{i}/pytorch_model.bin")
        save_file(state, f"{out}/model{i}/model.safetensors")
        with open(f"{out}/model{i}/config.json", "w") as fh:
            fh.write('{"model_type": "bench"}')
    np.savez(f"{out}/emb.npz", **{f"e{j}": rng.random((1000, 256), np.float32) for j in range(10)})
    torch.save({"state_dict": {f"w{j}": torch.randn(256, 256) for j in range(50)}, "epoch": 3}, f"{out}/lightning.ckpt")
    shutil.copy(os.path.join(os.path.dirname(__file__), "..", "fixtures", "keras", "tfkeras", "model.h5"), out)


if __name__ == "__main__":
    main(sys.argv[1])
