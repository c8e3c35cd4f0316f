"""P2 anchors: torch.load (mmap or not, weights_only) of the .pt, then save_file of the chosen tensors."""
import sys
import torch
from safetensors.torch import save_file
state = torch.load(sys.argv[1], mmap=sys.argv[4] == "mmap", weights_only=True)
save_file({k: v.contiguous() for k, v in state.items() if k.startswith(sys.argv[3])}, sys.argv[2])
