"""Build the DCP checkpoint for bench/consolidate_dcp.sh: 2 gloo ranks, N tensors of ROWS x ROWS float32,
each split on dim 0 across the ranks (DTensor Shard(0)). Usage: python make_dcp_bench.py DIR N ROWS"""
from __future__ import annotations

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard


def work(rank: int, world: int, port: int, path: str, n: int, rows: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    g = torch.Generator().manual_seed(rank)
    state = {f"layers.{i}.weight": DTensor.from_local(torch.randn(rows // world, rows, generator=g), mesh, [Shard(0)])
             for i in range(n)}
    dcp.save(state, storage_writer=dcp.FileSystemWriter(path))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(work, args=(2, port, sys.argv[1], int(sys.argv[2]), int(sys.argv[3])), nprocs=2, join=True)
