"""Benchmarks P1-P5, P6/P11 (streaming conversions), P7 (consolidate), P8 (reading over HTTP), P10 (the TensorFlow writer) and growth, side by side with the tools a user would pick instead (issue 11).

    bash bench/run.sh [--gb 4.3] [--data DIR] [--runs 5]     # writes bench/RESULTS.md
    bash bench/run.sh --only P7                              # (or P6, P8, P10) rewrites only that row's section

Files are built once in DIR (default $CKPTSURGEON_BENCH_DATA or /tmp/ckptsurgeon-bench; never in the
repository) by bench/make_data.py. Every figure is a whole process (start-up included), page cache warm;
each scenario alternates ckptsurgeon (A) with its anchor (B) and reports medians, min-max, peak RSS and
the median of the pairwise ratios. The P3 anchor needs TensorFlow: a Python with it at
$CKPTSURGEON_TF_PYTHON or /work/tfvenv/bin/python; otherwise the last measured anchor (bench/anchors.json)
is used and its date shown.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import Series, compare, floor_mib  # noqa: E402
from tfenv import tf_interpreter  # noqa: E402

HERE = Path(__file__).resolve().parent
PY = sys.executable
CLI = str(Path(PY).parent / "ckptsurgeon")
ANCHORS = HERE / "anchors"
CACHE = HERE / "anchors.json"  # last measured anchors that need a scratch environment (TensorFlow)
MIB = 1 << 20


@dataclass
class Result:
    id: str
    title: str
    a: Series
    b: Series | None
    ratios: list[float]
    target: str
    met: bool
    note: str = ""
    b_cached: dict | None = None
    bytes: dict | None = None  # P8: body bytes the server sent per run, and the bound


def _out(data: Path, name: str) -> str:
    return str(data / "out" / name)


def _clean(data: Path) -> Callable[[], None]:
    def clean() -> None:
        for f in (data / "out").iterdir():
            f.unlink()

    return clean


def _ratio_med(ratios: list[float]) -> float:
    return statistics.median(ratios) if ratios else float("nan")


def scenario(rid: str, title: str, a: list[str], b: list[str] | None, runs: int, target: str,
             check: Callable[[Series, Series | None, list[float]], bool], data: Path, note: str = "") -> Result:
    print(f"{rid}: {title} ...", flush=True)
    sa, sb, ratios = compare(a, b, runs, between=_clean(data))
    for series in (sa, sb):
        if series is not None and series.failed:
            raise SystemExit(f"{rid}: {' '.join(series.argv)} exited with {series.failed}")
    return Result(rid, title, sa, sb, ratios, target, check(sa, sb, ratios), note)


def p3(data: Path, runs: int) -> Result:
    prefix = str(data / "tf1_10k" / "model.ckpt")
    a = [CLI, "ls", "--json", prefix]
    tf = tf_interpreter()
    if tf:
        b = [tf, str(ANCHORS / "tf_list_variables.py"), prefix]
        res = scenario("P3", "`ls --json` of a 10,000-variable TF1 checkpoint", a, b, runs, "A <= B/10",
                       lambda sa, sb, r: _ratio_med(r) <= 0.1, data)
        version = subprocess.run([tf, "-c", "import tensorflow as t; print(t.__version__)"], capture_output=True,
                                 text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout.strip()
        assert res.b is not None
        cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
        cache["P3"] = {"date": str(datetime.date.today()), "tensorflow": version,
                       "wall": res.b.stat("wall"), "cpu": res.b.stat("cpu"), "peak_mib": res.b.stat("peak_mib")}
        CACHE.write_text(json.dumps(cache, indent=1) + "\n")
        res.note = f"anchor: TensorFlow {version}, measured now"
        return res
    cache = json.loads(CACHE.read_text()).get("P3") if CACHE.exists() else None
    print("P3: no TensorFlow here; comparing with the last measured anchor", flush=True)
    sa, _, _ = compare(a, None, runs, between=_clean(data))
    ratio = sa.stat("wall")[1] / cache["wall"][1] if cache else float("nan")
    res = Result("P3", "`ls --json` of a 10,000-variable TF1 checkpoint", sa, None, [ratio] if cache else [],
                 "A <= B/10", bool(cache) and ratio <= 0.1, b_cached=cache)
    res.note = (f"anchor not run (no TensorFlow): last measured {cache['date']} with TensorFlow {cache['tensorflow']}"
                if cache else "anchor never measured: run once with TensorFlow available")
    return res


def p10(data: Path, runs: int) -> list[Result]:
    """Writing a TensorFlow bundle of the big .pt (against cp), then TensorFlow reading ours against its own."""
    big_pt, largest = str(data / "big.pt"), 2500 * 4000 * 4
    out = [scenario("P10", "`extract --scope '**' --format tensorflow` of the big `.pt` (a TF bundle)",
                    [CLI, "extract", big_pt, "--scope", "**", "--format", "tensorflow", "-o", _out(data, "p10.ckpt")],
                    ["cp", big_pt, _out(data, "p10.copy")], runs, "A <= 1.5 B, peak <= largest + 150 MB",
                    lambda a, b, r: _ratio_med(r) <= 1.5 and a.stat("peak_mib")[1] <= (largest + 150e6) / MIB, data,
                    "writes .index + .data-00000-of-00001 (+ checkpoint), crc32c of every tensor; fsyncs")]
    tf_python = tf_interpreter()
    if tf_python is None:
        print("P10r: no TensorFlow here; skipped", flush=True)
        return out
    ours, theirs = data / "tf_ours", data / "tf_theirs"
    if not (theirs / "model.ckpt.index").exists():
        print("P10r: writing our bundle and TensorFlow's own of the same variables ...", flush=True)
        for d in (ours, theirs):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
        subprocess.run([CLI, "extract", big_pt, "--scope", "**", "--format", "tensorflow", "-o", str(ours / "model.ckpt")],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([tf_python, str(ANCHORS / "tf_resave.py"), str(ours / "model.ckpt"), str(theirs / "model.ckpt")],
                       check=True)
    same = all((ours / n).read_bytes() == (theirs / n).read_bytes() for n in ("model.ckpt.index",))
    out.append(scenario("P10r", "`tf.train.load_checkpoint` reading every tensor: our bundle (A) vs TensorFlow's own (B)",
                        [tf_python, str(ANCHORS / "tf_load_all.py"), str(ours / "model.ckpt")],
                        [tf_python, str(ANCHORS / "tf_load_all.py"), str(theirs / "model.ckpt")], runs, "A <= 1.05 B",
                        lambda a, b, r: _ratio_med(r) <= 1.05, data,
                        "TensorFlow's SaveV2 wrote B from the same variables; the two .index files are "
                        + ("byte-identical" if same else "**different**")))
    return out


P6_LARGEST = 4096 * 2048 * 4  # weight_ih of layers 1-3 (4H x 2H float32): 33.5 MB


def p6(data: Path, runs: int) -> list[Result]:
    """Streaming conversions (issue 22): a 370 MB 4-layer bidirectional nn.LSTM to Keras, the same weights from a TF1
    checkpoint to torch, against the hand-written torch script; then what verification costs of the first (P11)."""
    pt, tf1 = str(data / "lstm4bi.pt"), str(data / "lstm4bi_tf1" / "model.ckpt")
    bound = (4 * P6_LARGEST + 150e6) / MIB
    anchor = [PY, str(ANCHORS / "lstm_to_keras.py"), pt, _out(data, "p6b.safetensors"), "rnn."]
    keras = [CLI, "extract", pt, "--scope", "rnn", "--to", "keras", "-o", _out(data, "p6.safetensors")]

    def fits(a: Series, b: Series | None, r: list[float]) -> bool:
        return _ratio_med(r) <= 1.0 and a.stat("peak_mib")[1] <= bound

    out = [scenario("P6", "`extract --scope rnn --to keras` (verify on) of a 370 MB 4-layer bidirectional `nn.LSTM` `.pt`",
                    keras, anchor, runs, "A <= 1.0 B, peak <= 4 x largest + 150 MB", fits, data,
                    "anchor: torch.load(mmap) -> weight.T, bias_ih + bias_hh -> save_file, no verification; "
                    "our output holds the same tensors, byte for byte"),
           scenario("P6t", "`extract --to torch` (verify on) of the same weights as a TF1 checkpoint",
                    [CLI, "extract", tf1, "--to", "torch", "-o", _out(data, "p6t.safetensors")], anchor, runs,
                    "A <= 1.0 B, peak <= 4 x largest + 150 MB", fits, data,
                    "anchor: the P6 script (reading the TF1 checkpoint by hand needs TensorFlow, seconds of import)")]
    p11 = scenario("P11", "what verification adds to P6: P6 (A) against P6 with `--no-verify` (B)", keras,
                   keras[:-2] + ["--no-verify"] + keras[-2:], runs, "1 - B/A <= 0.20",
                   lambda a, b, r: 1 - 1 / _ratio_med(r) <= 0.20, data,
                   "share of P6's wall spent verifying: 1 - 1/(A/B)")
    out.append(p11)
    return out


def write_p6_section(results: list[Result], args, load_before, load_after, data: Path) -> str:
    """The streaming conversions' rows (P6, P6t, P11 of issue 22), between markers so that ``--only P6`` rewrites them."""
    size = (data / "lstm4bi.pt").stat().st_size / 1e6
    lines = ["<!-- P6:start -->", "## Streaming conversions (P6, P11)", "",
             f"Run {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by `bash bench/run.sh --only P6`; "
             f"`lstm4bi.pt` is `nn.LSTM(1024, 1024, num_layers=4, bidirectional=True)` ({size:.0f} MB), `lstm4bi_tf1` the "
             f"same weights as a TF1 checkpoint; {args.runs_p6} runs after a warm-up, A and B in turn; load average "
             f"{' '.join(f'{x:.2f}' for x in load_before)} before, {' '.join(f'{x:.2f}' for x in load_after)} after "
             "(2 cores shared: wall times are inflated, ratios less so). The largest tensor is 33.5 MB: the memory "
             f"bound is {(4 * P6_LARGEST + 150e6) / MIB:.0f} MiB.", "",
             "| # | scenario | ckptsurgeon (A) wall | A cpu | A peak | anchor (B) | B wall, cpu | B peak | A/B | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r, data) for r in results]
    lines += ["", *[f"- {r.id}: `{_show(r.a.argv, data)}`" + (f" - {r.note}" if r.note else "") for r in results]]
    p11 = next((r for r in results if r.id == "P11"), None)
    if p11 is not None and p11.ratios:
        lines.append(f"- P11: verification is {100 * (1 - 1 / _ratio_med(p11.ratios)):.0f}% of P6's wall (median of the "
                     f"pairs), {100 * (1 - p11.b.stat('cpu')[1] / p11.a.stat('cpu')[1]):.0f}% of its CPU time"
                     if p11.b is not None else "")
    lines += ["", "What bounds them:", "",
              "- Before (2026-12-04, the same files, whole-group conversion): P6 4.8 s and 1.2 GB (issue 22), P6t 860 MB. "
              "The group was held several times over: the source cells, the converted tensors, the converted tensors "
              "read back, and float64 copies of every weight in the reference run, which also re-read each input "
              "matrix at every step and ran OpenBLAS on two spinning threads for a batch of 3 sequences.",
              "- Now, memory: one cell (a layer's direction) at a time: its source tensors and its converted tensors "
              "(read back as views); the reference cells multiply float32 weights in float64 blocks of 512 KiB-2 MiB, "
              "with no float64 copy of a weight.",
              "- Now, time: the kernels are transposed in tiles of 16 x 1024 (`gates.transposed`; numpy's transposing "
              "copy was 1.2 s of P6 and 1.4 s of P6t), and the TF1 reader transposes each half of its kernel straight "
              "into the canonical order; what is left is the writer's (page-cache writes, a sha256 of every tensor, "
              "fsync) and the reader's. Verification (P11) runs each streamed cell on 3 steps of 3 sequences "
              "(docs/recurrent.md#verification): one pass over each input kernel and two over each recurrent kernel "
              "per side (the first step's recurrent product from a zero state is zero for a finite kernel), about 1 GB "
              "read for the group, ~0.2 s of one core.",
              "<!-- P6:end -->", ""]
    return "\n".join(lines)


def growth(data: Path, runs: int) -> list[tuple[str, str, int, Series]]:
    rows = []
    for fmt in ("safetensors", "pt"):
        for n in (10_000, 100_000):
            src = str(data / f"many{n}.{fmt}")
            for cmd, argv in (("ls", [CLI, "ls", src]),
                              ("extract", [CLI, "extract", src, "-s", "**", "-o", _out(data, "g.safetensors")])):
                print(f"growth: {cmd} {fmt} {n} ...", flush=True)
                series, _, _ = compare(argv, None, runs, between=_clean(data))
                if series.failed:
                    raise SystemExit(f"growth: {' '.join(argv)} exited with {series.failed}")
                rows.append((cmd, fmt, n, series))
    return rows


DCP_LARGEST = 4096 * 4096 * 4  # one tensor of dcp_4g: 64 MiB


def _dcp(data: Path) -> Path:
    """The 4 GiB DCP checkpoint of P7 and the memory rows: 64 tensors of 4096 x 4096 float32, each split across 2
    gloo ranks (built once, bench/make_dcp_bench.py)."""
    dcp = data / "dcp_4g"
    if not (dcp / ".metadata").exists():
        print("building the 4 GiB DCP checkpoint (2 ranks) ...", flush=True)
        shutil.rmtree(dcp, ignore_errors=True)
        subprocess.run([PY, str(HERE / "make_dcp_bench.py"), str(dcp), "64", "4096"], check=True)
    return dcp


def p7(data: Path, runs: int) -> list[Result]:
    """consolidate of a 4 GiB 2-rank DCP checkpoint to safetensors, against dcp_to_torch_save + save_file."""
    dcp = str(_dcp(data))
    bound = (DCP_LARGEST + 150e6) / MIB
    return [scenario("P7", "`consolidate` of a 4 GiB 2-rank DCP checkpoint (64 tensors of 64 MiB) to safetensors",
                     [CLI, "consolidate", dcp, "-o", _out(data, "p7.safetensors")],
                     [PY, str(ANCHORS / "dcp_to_safetensors.py"), dcp, _out(data, "p7b.safetensors")], runs,
                     "A <= 0.5 B, peak <= largest + 150 MB",
                     lambda a, b, r: _ratio_med(r) <= 0.5 and a.stat("peak_mib")[1] <= bound, data,
                     "anchor: `dcp_to_torch_save` (the whole state dict in memory, then `torch.save`), `torch.load`, "
                     "`save_file`; the intermediate `.pt` removed before the write, no fsync (ours fsyncs); both "
                     "outputs hold the same 64 tensors under the same names")]


P8_SCOPE, P8_PREFIX = "encoder/lstm/*", "encoder.lstm."


def _safetensors_bytes(path: Path, prefix: str) -> tuple[int, int]:
    """(header bytes including the 8-byte length, data bytes of the tensors named ``prefix...``)."""
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    sel = sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items()
              if k != "__metadata__" and k.startswith(prefix))
    return 8 + n, sel


def p8(data: Path, runs: int) -> list[Result]:
    """extract of an LSTM (8 tensors) from the big safetensors served over HTTP on 127.0.0.1, against downloading the
    whole file (what hf_hub_download does) and a safe_open script; the server (bench/range_serve.py, its own process,
    sendfile) counts the body bytes of every run."""
    import urllib.request

    big = data / "big.safetensors"
    head, sel = _safetensors_bytes(big, P8_PREFIX)
    limit = head + sel + 1_000_000
    server = subprocess.Popen([PY, str(HERE / "range_serve.py"), str(data)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/{big.name}"
        sent: list[int] = []
        clean = _clean(data)

        def between() -> None:
            clean()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/__sent") as resp:
                sent.append(json.loads(resp.read())["sent"])

        dl = _out(data, "p8.download")
        a = [CLI, "extract", url, "--scope", P8_SCOPE, "-o", _out(data, "p8.safetensors")]
        b = ["sh", "-c", f"{PY} {ANCHORS / 'download.py'} {url} {dl} && "
                         f"{PY} {ANCHORS / 'safe_open_extract.py'} {dl} {_out(data, 'p8b.safetensors')} {P8_PREFIX}"]
        print(f"P8: `extract` of {P8_SCOPE!r} from {url} ...", flush=True)
        sa, sb, ratios = compare(a, b, runs, between=between)
    finally:
        server.terminate()
        server.wait()
    for series in (sa, sb):
        if series is not None and series.failed:
            raise SystemExit(f"P8: {' '.join(series.argv)} exited with {series.failed}")
    a_sent, b_sent = sent[2::2], sent[3::2]  # A B A B ..., after one warm-up pair
    return [Result("P8", f"`extract --scope '{P8_SCOPE}'` (8 tensors, {sel / 1e6:.1f} MB) from the {big.stat().st_size / 1e9:.1f} GB "
                 "safetensors over HTTP (127.0.0.1)", sa, sb, ratios, "A <= 0.05 B, bytes <= header + tensors + 1 MB",
                 _ratio_med(ratios) <= 0.05 and max(a_sent) <= limit,
                 "anchor: download the whole file (`urllib`, 10 MiB chunks, as `hf_hub_download` does), then the P1 "
                 "`safe_open` script", bytes={"a": a_sent, "b": b_sent, "header": head, "selected": sel, "limit": limit})]


def write_p7_section(results: list[Result], args, load_before, load_after, data: Path) -> str:
    """The consolidate row (P7 of issue 22), between markers so that ``--only P7`` rewrites it."""
    size = sum(f.stat().st_size for f in (data / "dcp_4g").iterdir()) / 1e9
    lines = ["<!-- P7:start -->", "## Consolidating a DCP checkpoint (P7)", "",
             f"Run {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by `bash bench/run.sh"
             f"{' --only P7' if args.only else ''}`; `dcp_4g` ({size:.2f} GB, bench/make_dcp_bench.py): 64 float32 "
             "tensors of 4096 x 4096, each saved as a DTensor split on dim 0 across 2 gloo ranks (2 chunks in 2 "
             f"`.distcp` files); {args.runs_p6} runs after a warm-up, A and B in turn; load average "
             f"{' '.join(f'{x:.2f}' for x in load_before)} before, {' '.join(f'{x:.2f}' for x in load_after)} after "
             "(2 cores shared). The largest tensor is 64 MiB: the memory bound is "
             f"{(DCP_LARGEST + 150e6) / MIB:.0f} MiB.", "",
             "| # | scenario | ckptsurgeon (A) wall | A cpu | A peak | anchor (B) | B wall, cpu | B peak | A/B | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r, data) for r in results]
    lines += ["", *[f"- {r.id}: `{_show(r.a.argv, data)}`" + (f" - {r.note}" if r.note else "") for r in results]]
    lines += [*P7_BOUNDS, "<!-- P7:end -->", ""]
    return "\n".join(lines)


def write_p8_section(results: list[Result], args, load_before, load_after, data: Path) -> str:
    """The remote extract row (P8 of issue 22), between markers so that ``--only P8`` rewrites it."""
    lines = ["<!-- P8:start -->", "## Reading over HTTP (P8)", "",
             f"Run {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by `bash bench/run.sh"
             f"{' --only P8' if args.only else ''}`; `big.safetensors` served by `bench/range_serve.py` (its own "
             "process on 127.0.0.1: HEAD, ranged GET, bodies by `sendfile`, counting what it sends); "
             f"{args.runs_p6} runs after a warm-up, A and B in turn; load average "
             f"{' '.join(f'{x:.2f}' for x in load_before)} before, {' '.join(f'{x:.2f}' for x in load_after)} after "
             "(2 cores shared, the server's among them).", "",
             "| # | scenario | ckptsurgeon (A) wall | A cpu | A peak | anchor (B) | B wall, cpu | B peak | A/B | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r, data) for r in results]
    lines += ["", *[f"- {r.id}: `{_show(r.a.argv, data)}`" + (f" - {r.note}" if r.note else "") for r in results]]
    for r in results:
        nb = r.bytes
        if nb:
            lines.append(f"- bytes sent by the server, per run: ckptsurgeon {', '.join(f'{x:,}' for x in sorted(set(nb['a'])))}; "
                         f"the anchor {', '.join(f'{x:,}' for x in sorted(set(nb['b'])))}. Bound: header {nb['header']:,} + "
                         f"the 8 tensors {nb['selected']:,} + 1 MB = {nb['limit']:,}: "
                         f"{'met' if max(nb['a']) <= nb['limit'] else '**not met**'} "
                         f"({max(nb['a']) / nb['limit']:.2f} of it; {max(nb['a']) / max(nb['b']):.4f} of the anchor's)")
    lines += [*P8_BOUNDS, "<!-- P8:end -->", ""]
    return "\n".join(lines)


P7_BOUNDS = [
    "", "What bounds it (cProfile of one `consolidate`, 2026-12-04, load average about 4):", "",
    "- Of 17.1 s (profiled, the machine busy), 10.6 s is `write` of the 64 reassembled tensors (4.3 GB into the page "
    "cache, throttled by dirty-page writeback: the disk, which the test suite was also writing to), 3.0 s the sha256 of "
    "every tensor (about 1.4 GB/s on one core), 2.4 s `preadv` of the chunks into the 64 MiB reassembly buffer, 0.75 s "
    "the final fsync; reading `.metadata` and the chunks' zip headers and pickles is about 0.1 s. Memory: one tensor's "
    "buffer (64 MiB) over the interpreter's 30 MiB.",
    "- The anchor holds the whole state dict (4.4 GB peak) and moves the 4.3 GB five times (the DCP load, `torch.save` "
    "with its CRC-32, `torch.load`, `save_file`'s copy and write): 24 s of CPU against our 6.9 s.",
    "- Faster still: a DTensor `Shard(0)` chunk is a contiguous block of rows of the full tensor, so a reassembled tensor "
    "is its chunks' bytes end to end. Handing the safetensors writer those byte ranges (as a `.pt`'s storages are, P4) "
    "would copy them in the kernel (`copy_file_range`, writeback started as it goes) with no reassembly buffer and no "
    "sha256 (byte-exact ranges are not hashed): about `cp`'s time. Short of that, hashing in a thread overlapping the "
    "next tensor's read (hashlib releases the GIL) would hide most of the 3 s on 2 cores. Both are library changes "
    "(`formats/dcp/dcp_reader.py`, `formats/safetensors/writer.py`), not made here.",
]
P8_BOUNDS = [
    "", "What bounds it (cProfile of one remote `extract`, 2026-12-04):", "",
    "- ckptsurgeon sends one HEAD, one GET of the first 128 KiB (the header and its block), then one ranged GET of the "
    "8 tensors (adjacent in the file), over one keep-alive connection of the standard library's `http.client`: "
    "4,341,760 bytes of 4.32 GB. The exchange takes about 10 ms; the rest is what the local P1 costs (start-up, "
    "the header, the write). Before (fsspec + aiohttp, three HEADs) importing them cost ~0.12 s more.",
    "- The anchor is bounded by the loopback and the page cache: the download runs at 0.65-0.8 GB/s, the most "
    "favourable case for it. Over a real link (1 Gbit/s: about 35 s for the download alone) the ratio would be about "
    "0.01.",
]


def memory(data: Path, runs: int) -> list[tuple[str, list[str], float, Series]]:
    """Peak RSS of commands that hold tensors, against the bound: the largest tensor they hold plus 150 MB."""
    dcp = _dcp(data)
    block, tile = 2500 * 4000 * 4, 4096 * 4096 * 4
    cases = [
        ("stats of one 40 MB tensor (safetensors)", [CLI, "stats", str(data / "big.safetensors"), "--scope", "blocks/0/weight",
                                                     "--json"], block),
        ("stats of one 40 MB tensor (torch.save)", [CLI, "stats", str(data / "big.pt"), "--scope", "blocks/0/weight", "--json"],
         block),
        ("consolidate a 4 GiB DCP checkpoint (64 tensors of 64 MiB, 2 chunks each)",
         [CLI, "consolidate", str(dcp), "-o", _out(data, "dcp.safetensors")], tile),
    ]
    rows = []
    for title, argv, largest in cases:
        print(f"memory: {title} ...", flush=True)
        series, _, _ = compare(argv, None, runs, between=_clean(data))
        if series.failed:
            raise SystemExit(f"memory: {' '.join(argv)} exited with {series.failed}")
        rows.append((title, argv, (largest + 150e6) / MIB, series))
    return rows


def _show(argv: list[str], data: Path) -> str:
    """A command as a user would type it: data files, the venv's python and ckptsurgeon by name."""
    def short(x: str) -> str:
        if x == CLI:
            return "ckptsurgeon"
        if x == PY:
            return "python"
        return (x.replace(str(data) + "/out/", "").replace(str(data) + "/", "").replace(str(ANCHORS) + "/", "")
                .replace(PY + " ", "python ").replace(str(HERE) + "/", "bench/"))
    return " ".join(short(x) if " " not in x else repr(short(x)) for x in argv)


def _fmt(stat: tuple[float, float, float], unit: str = "s", digits: int = 2) -> str:
    lo, med, hi = stat
    return f"{med:.{digits}f} {unit} ({lo:.{digits}f}-{hi:.{digits}f})"


def _machine() -> list[str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    versions = subprocess.run([PY, "-c", "import numpy, safetensors, click; "
                               "import importlib.metadata as m; print(numpy.__version__, safetensors.__version__, "
                               "m.version('click'), end=' '); import torch; print(torch.__version__)"],
                              capture_output=True, text=True).stdout.split()
    names = ("numpy", "safetensors", "click", "torch")
    return [f"{platform.machine()}, {model}, {os.cpu_count()} cores, {mem} RAM, {platform.system()} {platform.release()}",
            f"Python {platform.python_version()}; " + ", ".join(f"{n} {v}" for n, v in zip(names, versions))]


def _bytecode() -> str:
    """Whether ckptsurgeon runs from compiled bytecode, as an installed package does."""
    import importlib.util

    import ckptsurgeon.api

    cached = Path(importlib.util.cache_from_source(ckptsurgeon.api.__file__))
    fresh = cached.exists() and cached.stat().st_mtime_ns >= Path(ckptsurgeon.api.__file__).stat().st_mtime_ns
    env = "set" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "unset"
    return (f"ckptsurgeon's bytecode is {'compiled' if fresh else 'NOT compiled (start-up includes compiling it)'} "
            f"(`scripts/setup.sh` compiles it, as `pip install` does; PYTHONDONTWRITEBYTECODE is {env})")


def _row(r: Result, data: Path) -> str:
    b_name, b_wall, b_peak = "(not measured)", "-", "-"
    if r.b is not None:
        b_name, b_wall, b_peak = f"`{_show(r.b.argv, data)}`", \
            f"{_fmt(r.b.stat('wall'))}, cpu {r.b.stat('cpu')[1]:.2f} s", f"{r.b.stat('peak_mib')[1]:.0f} MiB"
    ratio = f"{_ratio_med(r.ratios):.2f}" if r.ratios else "-"
    return (f"| {r.id} | {r.title} | {_fmt(r.a.stat('wall'))} | {r.a.stat('cpu')[1]:.2f} s | {r.a.stat('peak_mib')[1]:.0f} MiB "
            f"| {b_name} | {b_wall} | {b_peak} | {ratio} | {r.target} | {'yes' if r.met else '**no**'} |")


def write_section(results: list[Result], args, load_before, load_after, data: Path) -> str:
    """The TensorFlow writer's rows (issue 19, P10 of issue 22), between markers so that ``--only P10`` rewrites them."""
    size = (data / "big.pt").stat().st_size / 1e9
    lines = ["<!-- P10:start -->", "## Writing TensorFlow checkpoints (P10)", "",
             f"Run {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by `bash bench/run.sh --gb {args.gb}"
             f"{' --only P10' if args.only else ''}`; the same big checkpoint ({size:.2f} GB), 3 runs after a warm-up, "
             f"A and B in turn; load average {' '.join(f'{x:.2f}' for x in load_before)} before, "
             f"{' '.join(f'{x:.2f}' for x in load_after)} after. The largest tensor is 40 MB: the memory bound is "
             f"{(2500 * 4000 * 4 + 150e6) / MIB:.0f} MiB.", "",
             "| # | scenario | ckptsurgeon (A) wall | A cpu | A peak | anchor (B) | B wall, cpu | B peak | A/B | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r, data) for r in results]
    lines += ["", *[f"- {r.id}: `{_show(r.a.argv, data)}`" + (f" - {r.note}" if r.note else "") for r in results],
              "<!-- P10:end -->", ""]
    return "\n".join(lines)


def _replace_section(path: Path, name: str, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start in text and end in text:
        text = text[: text.index(start)] + section.rstrip("\n") + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def write_results(results: list[Result], rows, mem, args, load_before, load_after, floor: float, data: Path) -> str:
    size = (data / "big.pt").stat().st_size / 1e9
    lines = [
        "# Benchmark results",
        "",
        f"Run {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by `bash bench/run.sh --gb {args.gb}` "
        f"({args.runs} runs per command after one warm-up, A and B in turn).",
        "",
        *[f"- {line}" for line in _machine()],
        f"- load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{' '.join(f'{x:.2f}' for x in load_after)} after; a loaded machine inflates wall times (CPU time less so)",
        f"- big checkpoint: {size:.2f} GB, float32 tensors of 40 MB plus a 2-layer `nn.LSTM(256, 256)` under "
        "`encoder/lstm`; page cache warm; outputs deleted after every run",
        f"- peak RSS is the process's own maximum (`wait4`); the measuring process leaves a floor of {floor:.0f} MiB",
        f"- {_bytecode()}",
        "",
        "Medians, with min-max in parentheses; the ratio is the median of the per-pair ratios A/B (wall).",
        "",
        "| # | scenario | ckptsurgeon (A) wall | A cpu | A peak | anchor (B) | B wall, cpu | B peak | A/B | target | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.b is not None:
            b_name, b_wall, b_peak = f"`{_show(r.b.argv, data)}`", \
                f"{_fmt(r.b.stat('wall'))}, cpu {r.b.stat('cpu')[1]:.2f} s", f"{r.b.stat('peak_mib')[1]:.0f} MiB"
        elif r.b_cached:
            b_name = f"`tf.train.list_variables` (measured {r.b_cached['date']})"
            b_wall = f"{_fmt(tuple(r.b_cached['wall']))}, cpu {r.b_cached['cpu'][1]:.2f} s"
            b_peak = f"{r.b_cached['peak_mib'][1]:.0f} MiB"
        else:
            b_name, b_wall, b_peak = "(not measured)", "-", "-"
        if r.id == "P5" and r.b is not None:
            diff = statistics.median(a.wall - b.wall for a, b in zip(r.a.runs, r.b.runs))
            ratio = f"A-B = {diff * 1000:+.0f} ms"
        else:
            ratio = f"{_ratio_med(r.ratios):.2f}" if r.ratios else "-"
        lines.append(f"| {r.id} | {r.title} | {_fmt(r.a.stat('wall'))} | {r.a.stat('cpu')[1]:.2f} s | "
                     f"{r.a.stat('peak_mib')[1]:.0f} MiB | {b_name} | {b_wall} | {b_peak} | {ratio} | {r.target} | "
                     f"{'yes' if r.met else '**no**'} |")
    lines += ["", "Commands (A):", ""]
    for r in results:
        lines.append(f"- {r.id}: `{_show(r.a.argv, data)}`" + (f" - {r.note}" if r.note else ""))
    lines += ["", "## Growth with the number of tensors", "",
              "| command | format | tensors | wall | cpu | peak RSS |", "|---|---|---|---|---|---|"]
    by = {}
    for cmd, fmt, n, s in rows:
        by[(cmd, fmt, n)] = s
        lines.append(f"| {cmd} | {fmt} | {n:,} | {_fmt(s.stat('wall'))} | {s.stat('cpu')[1]:.2f} s | "
                     f"{s.stat('peak_mib')[1]:.0f} MiB |")
    lines += ["", "Linear: 10 times the tensors cost at most 11 times the time (start-up makes it less than 10 when",
              "linear); quadratic work would show ~100.", "",
              "| curve | 100k / 10k (wall) | linear | 100k under 2 s (wall) | 100k cpu |", "|---|---|---|---|---|"]
    for cmd in ("ls", "extract"):
        for fmt in ("safetensors", "pt"):
            small, big = by[(cmd, fmt, 10_000)].stat("wall")[1], by[(cmd, fmt, 100_000)].stat("wall")[1]
            under = ("yes" if big < 2 else "**no**") if cmd == "ls" else "-"
            lines.append(f"| {cmd} {fmt} | {big / small:.1f} | {'yes' if big / small <= 11 else '**no**'} | {under} | "
                         f"{by[(cmd, fmt, 100_000)].stat('cpu')[1]:.2f} s |")
    bound = 150e6 / MIB  # 150 MB = 143 MiB
    over = [f"{cmd} {fmt} {n:,} ({s.stat('peak_mib')[1]:.0f} MiB)" for cmd, fmt, n, s in rows if s.stat("peak_mib")[1] > bound]
    over += [f"{r.id} ({r.a.stat('peak_mib')[1]:.0f} MiB)" for r in results
             if r.a.stat("peak_mib")[1] > bound and not r.id.startswith(("P10", "P6", "P11"))]  # these convert: own bounds
    lines += ["", "## Memory", "",
              "Target: peak RSS at most the largest tensor converted plus 150 MB. None of these commands converts a",
              f"tensor, so the bound is 150 MB ({bound:.0f} MiB): " + ("all within it." if not over else
                                                        "over it: " + ", ".join(over) + " (reading or writing the "
                                                        "records of that many tensors, not tensor bytes; see the README)."),
              "",
              "Commands that hold tensors, against the largest tensor they hold plus 150 MB:", "",
              "| command | wall | peak RSS | bound | met |", "|---|---|---|---|---|"]
    for title, argv, limit, s in mem:
        peak = s.stat("peak_mib")[1]
        lines.append(f"| {title}: `{_show(argv, data)}` | {_fmt(s.stat('wall'))} | {peak:.0f} MiB | {limit:.0f} MiB | "
                     f"{'yes' if peak <= limit else '**no**'} |")
    lines += ["", "`tests/test_memory.py` extracts 2 GiB, and runs `stats` of a 256 MiB tensor, under a 600 MiB "
              "address-space limit.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description="ckptsurgeon benchmarks (issue 11)")
    ap.add_argument("--gb", type=float, default=float(os.environ.get("CKPTSURGEON_BENCH_GB", 4.3)),
                    help="size of the big checkpoint in GB (default 4.3)")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CKPTSURGEON_BENCH_DATA", "/tmp/ckptsurgeon-bench")))
    ap.add_argument("--runs", type=int, default=5, help="runs per command for the quick scenarios (slow ones: 3)")
    ap.add_argument("--only", choices=["P10", "P6", "P7", "P8"], default=None,
                    help="run only these rows and rewrite only their section of RESULTS.md")
    args = ap.parse_args()
    data: Path = args.data.resolve()
    if str(data).startswith(str(HERE.parent.resolve()) + os.sep):
        raise SystemExit(f"{data}: the benchmark data must live outside the repository")
    subprocess.run([PY, str(HERE / "make_data.py"), str(data), "--gb", str(args.gb)], check=True)
    (data / "out").mkdir(exist_ok=True)
    _clean(data)()
    load_before = os.getloadavg()
    floor = floor_mib()
    big_st, big_pt = str(data / "big.safetensors"), str(data / "big.pt")
    slow = max(3, args.runs - 2)
    args.runs_p6 = slow
    if args.only == "P6":
        section = write_p6_section(p6(data, slow), args, load_before, os.getloadavg(), data)
        _replace_section(HERE / "RESULTS.md", "P6", section)
        shutil.rmtree(data / "out", ignore_errors=True)
        print(section)
        return
    if args.only in ("P7", "P8"):
        rows_of, write = (p7, write_p7_section) if args.only == "P7" else (p8, write_p8_section)
        section = write(rows_of(data, slow), args, load_before, os.getloadavg(), data)
        _replace_section(HERE / "RESULTS.md", args.only, section)
        shutil.rmtree(data / "out", ignore_errors=True)
        print(section)
        return
    if args.only:
        section = write_section(p10(data, slow), args, load_before, os.getloadavg(), data)
        _replace_section(HERE / "RESULTS.md", "P10", section)
        shutil.rmtree(data / "out", ignore_errors=True)
        print(section)
        return
    results = [
        scenario("P1", "`extract --scope 'encoder/lstm/*'` from the big safetensors",
                 [CLI, "extract", big_st, "--scope", "encoder/lstm/*", "-o", _out(data, "p1.safetensors")],
                 [PY, str(ANCHORS / "safe_open_extract.py"), big_st, _out(data, "p1b.safetensors"), "encoder.lstm."],
                 args.runs, "A <= 1.3 B", lambda a, b, r: _ratio_med(r) <= 1.3, data,
                 "anchor: safe_open (numpy) reads the 8 tensors, save_file writes them"),
        scenario("P2", "the same from the same weights saved by `torch.save`",
                 [CLI, "extract", big_pt, "--scope", "encoder/lstm/*", "-o", _out(data, "p2.safetensors")],
                 [PY, str(ANCHORS / "torch_load_extract.py"), big_pt, _out(data, "p2b.safetensors"), "encoder.lstm.", "mmap"],
                 args.runs, "A <= B/3", lambda a, b, r: _ratio_med(r) <= 1 / 3, data,
                 "anchor: torch.load(mmap=True, weights_only=True) + save_file"),
        scenario("P2b", "the same, against `torch.load` without mmap",
                 [CLI, "extract", big_pt, "--scope", "encoder/lstm/*", "-o", _out(data, "p2.safetensors")],
                 [PY, str(ANCHORS / "torch_load_extract.py"), big_pt, _out(data, "p2b.safetensors"), "encoder.lstm.", "full"],
                 slow, "A <= B/20", lambda a, b, r: _ratio_med(r) <= 1 / 20, data,
                 "anchor: torch.load(weights_only=True) + save_file"),
        p3(data, args.runs),
        scenario("P4", "`extract --scope '**'` of the big `.pt` to safetensors",
                 [CLI, "extract", big_pt, "--scope", "**", "-o", _out(data, "p4.safetensors")],
                 ["cp", big_pt, _out(data, "p4.copy")],
                 slow, "A <= 1.5 B, peak <= 200 MiB", lambda a, b, r: _ratio_med(r) <= 1.5 and a.stat("peak_mib")[1] <= 200,
                 data, "anchor: cp of the file (no fsync; ckptsurgeon fsyncs its output before the rename)"),
        scenario("P4s", "the same, against `cp` + `sync` of the copy (both durable)",
                 [CLI, "extract", big_pt, "--scope", "**", "-o", _out(data, "p4.safetensors")],
                 ["sh", "-c", f"cp {big_pt} {_out(data, 'p4.copy')} && sync {_out(data, 'p4.copy')}"],
                 slow, "(for reference)", lambda a, b, r: True, data),
        scenario("P5", "cold `ls` of a 20-tensor safetensors",
                 [CLI, "ls", str(data / "small20.safetensors")], [PY, "-c", "import numpy, safetensors"],
                 args.runs + 2, "A <= B + 0.05 s",
                 lambda a, b, r: b is not None and statistics.median(x.wall - y.wall for x, y in zip(a.runs, b.runs)) <= 0.05,
                 data),
        *p10(data, slow),
        *p6(data, slow),
        *p7(data, slow),
        *p8(data, slow),
    ]
    rows = growth(data, slow)
    mem = memory(data, slow)
    load_after = os.getloadavg()
    text = write_results([r for r in results if not r.id.startswith(("P10", "P6", "P11", "P7", "P8"))], rows, mem, args,
                         load_before,
                         load_after,
                         floor, data)
    text += "\n" + write_section([r for r in results if r.id.startswith("P10")], args, load_before, load_after, data)
    text += "\n" + write_p6_section([r for r in results if r.id in ("P6", "P6t", "P11")], args, load_before, load_after,
                                    data)
    text += "\n" + write_p7_section([r for r in results if r.id == "P7"], args, load_before, load_after, data)
    text += "\n" + write_p8_section([r for r in results if r.id == "P8"], args, load_before, load_after, data)
    (HERE / "RESULTS.md").write_text(text)
    shutil.rmtree(data / "out", ignore_errors=True)
    print(text)


if __name__ == "__main__":
    main()
