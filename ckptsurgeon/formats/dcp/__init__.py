"""PyTorch Distributed Checkpoint (DCP) folders: ``dcp_metadata`` (the ``.metadata`` pickle's stand-ins)
and ``dcp_reader`` (lazy reassembly of sharded tensors from ``.distcp`` files), no torch needed."""
