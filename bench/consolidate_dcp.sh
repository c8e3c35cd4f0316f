#!/usr/bin/env bash
# consolidate of a ~4 GiB PyTorch Distributed Checkpoint: peak RSS must stay under 200 MiB
# (the issue's goal: at most the largest tensor + 150 MB, however big the checkpoint).
#
#   bash bench/consolidate_dcp.sh [DATA_DIR]     # default DATA_DIR: /work/bench-data (else /tmp)
#
# Builds (once, bench/make_dcp_bench.py) a DCP folder with torch from .venv: 2 gloo processes on CPU,
# 64 tensors of 64 MiB float32 (4 GiB), each split across the 2 ranks on dim 0 (DTensor Shard(0)), so
# every tensor is reassembled from 2 chunks in 2 .distcp files. Then runs `ckptsurgeon consolidate`
# (one file, then 1 GB shards) under /usr/bin/time -v and prints the peak RSS, the import baseline
# and the check.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh test
PY=.venv/bin/python
DATA=${1:-/work/bench-data}
mkdir -p "$DATA" 2>/dev/null || DATA=/tmp/ckptsurgeon-bench
mkdir -p "$DATA"
CKPT="$DATA/dcp_4g"
OUT="$DATA/dcp_4g.safetensors"
N=64
ROWS=4096   # 4096 x 4096 float32 = 64 MiB per tensor

if [ ! -f "$CKPT/.metadata" ]; then
  echo "building $CKPT (4 GiB, 2 ranks) ..."
  rm -rf "$CKPT"
  nice "$PY" bench/make_dcp_bench.py "$CKPT" "$N" "$ROWS"
fi
du -sh "$CKPT"
rm -f "$OUT"
base=$( { /usr/bin/time -v .venv/bin/ckptsurgeon ls "$CKPT" --scope layers/0 >/dev/null; } 2>&1 | awk -F: '/Maximum resident/ {print $2+0}')
log=$( { /usr/bin/time -v .venv/bin/ckptsurgeon consolidate "$CKPT" -o "$OUT"; } 2>&1 )
echo "$log" | grep -E "^wrote|Elapsed|Maximum resident"
peak=$(echo "$log" | awk -F: '/Maximum resident/ {print $2+0}')
largest=$((ROWS * ROWS * 4 / 1024))
echo "ls baseline (imports + metadata): $((base / 1024)) MiB; largest tensor: $((largest / 1024)) MiB"
echo "consolidate peak RSS: $((peak / 1024)) MiB for $(du -sh "$CKPT" | cut -f1) of DCP"
if [ "$peak" -lt $((200 * 1024)) ] && [ "$peak" -le $((largest + 150 * 1000)) ]; then
  echo "PASS: under 200 MiB and under the largest tensor + 150 MB"
else
  echo "FAIL: goal is under 200 MiB and under the largest tensor + 150 MB"
  status=1
fi
rm -rf "$OUT.shards"
slog=$( { /usr/bin/time -v .venv/bin/ckptsurgeon consolidate "$CKPT" -o "$OUT.shards" --max-shard-size 1GB; } 2>&1 )
speak=$(echo "$slog" | awk -F: '/Maximum resident/ {print $2+0}')
echo "consolidate --max-shard-size 1GB: $(ls "$OUT.shards" | wc -l) files, peak RSS $((speak / 1024)) MiB"
[ "$speak" -lt $((200 * 1024)) ] || { echo "FAIL: sharded consolidate over 200 MiB"; status=1; }
rm -rf "$OUT.shards"
"$PY" - "$CKPT" "$OUT" <<'EOF'
import sys, numpy as np, ckptsurgeon
src, out = ckptsurgeon.open(sys.argv[1]), ckptsurgeon.open(sys.argv[2])
for key in ("layers/0/weight", "layers/63/weight"):
    assert np.array_equal(src[key].numpy(), out[key].numpy()), key
print(f"spot check: {len(out)} tensors, first and last equal to the DCP's")
EOF
rm -f "$OUT"
exit ${status:-0}
