"""P7 anchor: what the PyTorch documentation offers for a DCP checkpoint (`dcp_to_torch_save`), then safetensors.

    python dcp_to_safetensors.py DCP_DIR OUT.safetensors

`dcp_to_torch_save` loads the whole state dict and writes it with `torch.save`; the `.pt` is loaded back and
written with `safetensors.torch.save_file`. The intermediate `.pt` is removed before the write (so the disk
never holds three copies); no fsync.
"""
import os
import sys

import torch
from safetensors.torch import save_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

src, out = sys.argv[1], sys.argv[2]
tmp = out + ".pt"
dcp_to_torch_save(src, tmp)
state = torch.load(tmp, weights_only=True)
os.unlink(tmp)
save_file({k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}, out)
