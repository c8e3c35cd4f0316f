"""A fuzzing campaign: mutate seeds, run every command on every mutant, collect failures, shrink each
new one to a small reproducer and save it (``reproducers/<format>-<kind>-<hash>/``).

    .venv/bin/python -m tests.fuzz.campaign --seconds 3600 --seed 7     # or FUZZ_SECONDS=3600
    .venv/bin/python -m tests.fuzz.campaign --cases 40 --seed 1         # fixed work (what CI runs)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(HERE.parent.parent))
    __package__ = "tests.fuzz"

from .harness import Limits, Outcome, run_case  # noqa: E402
from .mutators import mutate  # noqa: E402
from .seeds import FORMATS, Seed, load_seeds  # noqa: E402

REPRODUCERS = HERE / "reproducers"
MAX_SHRINK_RUNS = 120


def _fails_the_same(seed: Seed, files: dict[str, bytes], command: str, signature: str, limits: Limits) -> bool:
    (outcome,) = run_case(seed, files, [command], limits)
    return outcome.failed and outcome.signature == signature


def shrink(seed: Seed, files: dict[str, bytes], outcome: Outcome, limits: Limits) -> dict[str, bytes]:
    """Smaller files that fail the same way: bytes put back as in the seed, tails cut, chunks dropped."""
    budget = [MAX_SHRINK_RUNS if outcome.kind != "timeout" else 6]

    def same(candidate: dict[str, bytes]) -> bool:
        if budget[0] <= 0:
            return False
        budget[0] -= 1
        return _fails_the_same(seed, candidate, outcome.command, outcome.signature, limits)

    files = dict(files)
    for name in list(files):
        data, base = files[name], seed.files.get(name, b"")
        if data == base:
            continue
        if len(data) == len(base):  # revert differing bytes, half of the remaining differences at a time
            diff = [i for i in range(len(data)) if data[i] != base[i]]
            step = max(1, len(diff) // 2)
            while diff and budget[0] > 0:
                changed = False
                for k in range(0, len(diff), step):
                    trial = bytearray(files[name])
                    for i in diff[k:k + step]:
                        trial[i] = base[i]
                    if same({**files, name: bytes(trial)}):
                        files[name] = bytes(trial)
                        diff = [i for i in diff if files[name][i] != base[i]]
                        changed = True
                        break
                if not changed:
                    if step == 1:
                        break
                    step = max(1, step // 2)
        chunk = max(1, len(files[name]) // 2)
        while chunk >= 1 and budget[0] > 0:  # cut the tail, then drop chunks
            data = files[name]
            if len(data) > chunk and same({**files, name: data[:-chunk]}):
                files[name] = data[:-chunk]
                continue
            chunk //= 2
    return files


def save(seed: Seed, files: dict[str, bytes], outcome: Outcome, note: str, folder: Path = REPRODUCERS) -> Path:
    digest = hashlib.sha256(b"".join(files[n] for n in sorted(files))).hexdigest()[:10]
    out = folder / f"{seed.fmt}-{outcome.command}-{outcome.kind}-{digest}"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / "case.json").write_text(json.dumps({
        "format": seed.fmt, "seed": seed.name, "target": seed.target, "command": outcome.command,
        "signature": outcome.signature, "mutation": note, "stderr": outcome.stderr[-500:]}, indent=1) + "\n")
    return out


def known_signatures(folder: Path = REPRODUCERS) -> set[str]:
    found = set()
    for case in folder.glob("*/case.json"):
        info = json.loads(case.read_text())
        found.add(f"{info['format']}|{info['signature']}")
    return found


def replay(folder: Path, commands: list[str], limits: Limits) -> dict:
    """Run every saved reproducer again; each must now give a clean outcome."""
    failures, count = [], 0
    for case in sorted(folder.glob("*/case.json")):
        info = json.loads(case.read_text())
        files = {p.name: p.read_bytes() for p in case.parent.iterdir() if p.name != "case.json"}
        seed = Seed(info["format"], info["seed"], files, info["target"])
        for outcome in run_case(seed, files, commands, limits):
            count += 1
            if outcome.failed:
                failures.append({"reproducer": case.parent.name, **outcome.as_dict()})
    return {"reproducers": len(list(folder.glob("*/case.json"))), "total_executions": count, "failures": failures,
            "unique_failures": sorted({f"{f['reproducer']}|{f['command']}:{f['kind']}" for f in failures})}


def run(*, seed: int, seconds: float | None, cases: int | None, formats: tuple[str, ...], commands: list[str],
        limits: Limits, save_new: bool, log=print, max_seconds: float | None = None) -> dict:
    """Fuzz until ``seconds`` pass or ``cases`` mutants per format ran (at most ``max_seconds``)."""
    rng = random.Random(seed)
    seeds = [s for s in load_seeds() if s.fmt in formats]
    by_format = defaultdict(list)
    for s in seeds:
        by_format[s.fmt].append(s)
    counts: Counter = Counter()
    executions: Counter = Counter()
    kinds: Counter = Counter()
    failures: list[dict] = []
    seen = known_signatures() if save_new else set()
    start = time.monotonic()
    order = [f for f in formats if f in by_format]
    i = 0
    while True:
        if seconds is not None and time.monotonic() - start > seconds:
            break
        if max_seconds is not None and time.monotonic() - start > max_seconds:
            log(f"stopping at the {max_seconds:g} s cap")
            break
        if cases is not None and all(counts[f] >= cases for f in order):
            break
        fmt = order[i % len(order)]
        i += 1
        if cases is not None and counts[fmt] >= cases:
            continue
        base = rng.choice(by_format[fmt])
        files, note = mutate(fmt, dict(base.files), rng)
        counts[fmt] += 1
        outcomes = run_case(base, files, commands, limits)
        executions[fmt] += len(outcomes)
        for outcome in outcomes:
            kinds[outcome.kind] += 1
            if not outcome.failed:
                continue
            key = f"{fmt}|{outcome.signature}"
            record = {"format": fmt, "seed": base.name, "mutation": note, **outcome.as_dict()}
            if key not in seen:
                seen.add(key)
                log(f"NEW {key}  ({base.name}: {note})  {outcome.stderr[-300:]!r}")
                if save_new:
                    small = shrink(base, files, outcome, limits)
                    record["reproducer"] = str(save(base, small, outcome, note))
                    record["reproducer_bytes"] = sum(len(d) for d in small.values())
            failures.append(record)
    elapsed = time.monotonic() - start
    return {"seed": seed, "seconds": round(elapsed, 1), "mutants": dict(counts), "executions": dict(executions),
            "total_executions": sum(executions.values()), "outcomes": dict(kinds), "failures": failures,
            "unique_failures": sorted({f"{f['format']}|{f['command']}:{f['kind']}:{f['detail']}" for f in failures})}


def atheris_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("atheris") is not None


def run_atheris(*, seconds: float, formats: tuple[str, ...], commands: list[str], limits: Limits, save_new: bool,
                log=print) -> dict:
    """Coverage-guided fuzzing (``coverage.py``) of each pure-Python reader for a share of ``seconds``;
    every artifact libFuzzer keeps is replayed through the CLI harness, shrunk and saved if it fails there."""
    import re
    import subprocess
    import tempfile

    from .coverage import TARGETS

    todo = [f for f in formats if f in TARGETS]
    seeds = {s.fmt: s for s in reversed(load_seeds())}
    executions: Counter = Counter()
    failures: list[dict] = []
    seen = known_signatures() if save_new else set()
    for fmt in todo:
        seed = seeds[fmt]
        name = seed.target or next(n for n in seed.files if n.endswith(".index"))
        with tempfile.TemporaryDirectory(prefix="ckath-") as work:
            corpus, artifacts = Path(work, "corpus"), Path(work, "artifacts")
            corpus.mkdir()
            artifacts.mkdir()
            for s in load_seeds():
                if s.fmt == fmt and (s.target or name) in s.files:
                    (corpus / s.name).write_bytes(s.files[s.target or name])
            per = max(10, int(seconds / len(todo)))
            proc = subprocess.run(
                [sys.executable, "-m", "tests.fuzz.coverage", fmt, str(corpus), f"-max_total_time={per}",
                 f"-timeout={int(limits.seconds)}", f"-rss_limit_mb={limits.memory_mib}", "-print_final_stats=1",
                 f"-artifact_prefix={artifacts}/", "-close_fd_mask=3"],
                cwd=HERE.parent.parent, capture_output=True, text=True, timeout=per + 300,
                env={**os.environ, "CKCOV_DIR": work})
            m = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
            executions[fmt] = int(m.group(1)) if m else 0
            log(f"atheris {fmt}: {executions[fmt]} executions, {len(list(artifacts.iterdir()))} artifacts")
            for artifact in sorted(artifacts.iterdir()):
                files = {**seed.files, name: artifact.read_bytes()}
                for outcome in run_case(seed, files, commands, limits):
                    if not outcome.failed:
                        continue
                    key = f"{fmt}|{outcome.signature}"
                    record = {"format": fmt, "seed": seed.name, "mutation": f"atheris {artifact.name}",
                              **outcome.as_dict()}
                    if key not in seen:
                        seen.add(key)
                        log(f"NEW (atheris) {key}  {outcome.stderr[-300:]!r}")
                        if save_new:
                            small = shrink(seed, files, outcome, limits)
                            record["reproducer"] = str(save(seed, small, outcome, record["mutation"]))
                    failures.append(record)
    return {"atheris_executions": dict(executions), "atheris_total": sum(executions.values()), "failures": failures}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "1")))
    ap.add_argument("--seconds", type=float, default=float(os.environ["FUZZ_SECONDS"]) if os.environ.get("FUZZ_SECONDS") else None)
    ap.add_argument("--cases", type=int, default=None, help="mutants per format (instead of --seconds)")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--commands", default="ls,extract,scan")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--memory-mib", type=int, default=2048)
    ap.add_argument("--no-save", action="store_true", help="do not shrink and save new failures")
    ap.add_argument("--report", type=Path, help="write the JSON report here")
    ap.add_argument("--max-seconds", type=float, default=None, help="stop a --cases run after this long")
    ap.add_argument("--replay", type=Path, nargs="?", const=REPRODUCERS, help="re-run saved reproducers instead")
    ap.add_argument("--atheris-share", type=float, default=0.25,
                    help="with --seconds and atheris installed: this share of the time goes to coverage-guided fuzzing")
    args = ap.parse_args(argv)
    if args.seconds is None and args.cases is None:
        args.cases = 40
    os.environ.setdefault("CKPTSURGEON_HDF5_TIMEOUT", str(max(1.0, args.timeout / 3)))
    import h5py  # noqa: F401 - loaded once here so that every forked case starts with it
    import importlib

    import ckptsurgeon.cli
    import ckptsurgeon.formats

    # Every subcommand and reader now, not lazily in each case: faster, and no case ever reads source
    # files from disk (a checkout changing during a campaign would otherwise be half imported).
    for module, _attr, _help in ckptsurgeon.cli.COMMANDS.values():
        importlib.import_module(f"ckptsurgeon.cli.{module}")
    ckptsurgeon.formats.load_all()
    import ckptsurgeon.check.scan  # noqa: F401
    import ckptsurgeon.formats.pickles  # noqa: F401
    import ckptsurgeon.formats.hdf5.h5probe  # noqa: F401

    limits = Limits(args.timeout, args.memory_mib)
    if args.replay:
        report = replay(args.replay, args.commands.split(","), limits)
    else:
        log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        formats, commands = tuple(args.formats.split(",")), args.commands.split(",")
        share = args.atheris_share if args.seconds and atheris_available() else 0.0
        mutation_seconds = args.seconds * (1 - share) if args.seconds else None
        report = run(seed=args.seed, seconds=mutation_seconds, cases=args.cases, formats=formats, commands=commands,
                     limits=limits, save_new=not args.no_save, log=log, max_seconds=args.max_seconds)
        if share:
            extra = run_atheris(seconds=args.seconds * share, formats=formats, commands=commands, limits=limits,
                                save_new=not args.no_save, log=log)
            report["failures"] += extra.pop("failures")
            report.update(extra)
            report["unique_failures"] = sorted({f"{f['format']}|{f['command']}:{f['kind']}:{f['detail']}"
                                                for f in report["failures"]})
    text = json.dumps(report, indent=1)
    if args.report:
        args.report.write_text(text + "\n")
    summary = {k: v for k, v in report.items() if k != "failures"}
    print(json.dumps(summary, indent=1))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
