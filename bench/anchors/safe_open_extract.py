"""P1 anchor: what a user would write with the safetensors library (numpy framework)."""
import sys
from safetensors import safe_open
from safetensors.numpy import save_file
with safe_open(sys.argv[1], framework="np") as f:
    tensors = {k: f.get_tensor(k) for k in f.keys() if k.startswith(sys.argv[3])}
save_file(tensors, sys.argv[2])
