"""``scan`` results as text, JSON, GitHub workflow annotations or JUnit XML, each file with its verdict.

``fail_on`` is the verdict that fails the run (``unsafe``, or ``code`` as well): findings at or above it are
errors (annotations ``::error``, JUnit failures), findings below it are told as warnings (``::warning``, the
test case's ``system-out``).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence

from .report import format_counts, escape_github, escape_property, junit_suite
from .scan import LEVELS, SCAN_KINDS, ScanResult, _findings_by_file, finding_level, level_of

__all__ = ["render_scan", "fails", "file_rows", "summary_counts"]


def file_rows(results: Sequence[ScanResult]) -> list[tuple[str, str, int, str]]:
    """Every file scanned, those under folder arguments included: (file, verdict, findings, first finding)."""
    rows = []
    for r in results:
        if r.files:
            by_file = _findings_by_file(r.findings, [v.file for v in r.files])
            for v in r.files:
                mine = by_file.get(v.file, [])
                rows.append((v.file, v.level, len(mine), mine[0].message if mine else ""))
            assigned = {id(f) for fs in by_file.values() for f in fs}
            rest = [f for f in r.findings if id(f) not in assigned]
            if rest:  # findings of the folder itself (its own reading, links, bounds)
                rows.append((r.file, level_of(rest), len(rest), rest[0].message))
        else:
            rows.append((r.file, r.level, len(r.findings), r.findings[0].message if r.findings else ""))
    return rows


def summary_counts(results: Sequence[ScanResult]) -> dict[str, int]:
    rows = file_rows(results)
    return {"files": len(rows), **{lv: sum(row[1] == lv for row in rows) for lv in LEVELS}}


def summary_table(results: Sequence[ScanResult], width: int = 100) -> list[str]:
    """A verdict count line, then one row per file that is not clean (verdict, findings, file, first finding)."""
    rows = file_rows(results)
    counts = summary_counts(results)
    lines = [f"summary: {counts['files']} file(s): " + ", ".join(f"{counts[lv]} {lv}" for lv in LEVELS if counts[lv])]
    bad = sorted((row for row in rows if row[1] != "clean"), key=lambda row: (-LEVELS.index(row[1]), row[0]))
    if bad:
        lines.append(f"  {'verdict':<8} {'findings':>8}  file: first finding")
        for file, level, n, first in bad:
            first = re.sub(r"^(@\d+)?(:[^ ]*)?: ", "", first.removeprefix(file)) if first.startswith(file) else first
            lines.append(f"  {level:<8} {n:>8}  {file}: {first[:width]}")
    return lines


def fails(level: str, fail_on: str) -> bool:
    """Whether a verdict fails a run that fails on ``fail_on``."""
    return LEVELS.index(level) >= LEVELS.index(fail_on)


def _verdict(r: ScanResult) -> str:
    return "clean" if r.ok else f"{r.level}: {len(r.findings)} finding(s)"


def render_scan(results: Sequence[ScanResult], fmt: str, fail_on: str = "unsafe", summary_only: bool = False) -> str:
    """``scan`` results of several files in one report; ``summary_only``: the text report is the summary table."""
    bad = [r for r in results if not r.ok]
    worst = level_of([f for r in results for f in r.findings])
    if fmt == "json":
        return json.dumps({"ok": not bad, "level": worst, "fail_on": fail_on, "summary": summary_counts(results),
                           "files": [r.as_dict() for r in results]}, indent=2, default=str)
    if fmt == "github":
        lines = [f"::{'error' if fails(finding_level(f), fail_on) else 'warning'} file={escape_property(r.file)},"
                 f"title=ckptsurgeon scan {f.kind}::{escape_github(f.message)}" for r in results for f in r.findings]
        lines.append("::notice title=ckptsurgeon scan::" + (f"{len(bad)} of {len(results)} file(s) have findings ("
                                                            f"{_levels(results)})" if bad else f"{len(results)} file(s) clean"))
        return "\n".join(lines)
    if fmt == "junit":
        from xml.etree import ElementTree as ET

        root = ET.Element("testsuites", name="ckptsurgeon scan")
        for r in results:
            failing = [f for f in r.findings if fails(finding_level(f), fail_on)]
            suite = junit_suite(root, f"ckptsurgeon scan {r.file}", r.file, SCAN_KINDS, failing)
            props = ET.Element("properties")
            ET.SubElement(props, "property", name="level", value=r.level)
            suite.insert(0, props)
            told = [f for f in r.findings if not fails(finding_level(f), fail_on)]
            for case in suite.findall("testcase"):
                mine = [f.message for f in told if f.kind == case.get("name")]
                if mine:
                    ET.SubElement(case, "system-out").text = "\n".join(mine)
        for key in ("tests", "failures", "errors"):
            root.set(key, str(sum(int(suite.get(key, "0")) for suite in root.findall("testsuite"))))
        return ET.tostring(root, encoding="unicode", xml_declaration=True)
    if summary_only:
        return "\n".join(summary_table(results))
    lines = []
    for r in results:
        lines.append(f"{r.file}: {r.format or 'unknown format'}, {len(r.pickles)} pickle(s)")
        for p in r.pickles:
            lines.append(f"  {p.where} ({p.nbytes:,} bytes)")
            names = {f"{m}.{n}": c for (m, n), c in p.globals.items()}
            lines.append(f"    globals: {format_counts(names) or 'none'}")
            lines.append("    opcodes: " + "; ".join(f"{cls} ({format_counts(ops)})" for cls, ops in sorted(p.opcodes.items())))
        for f in r.findings:
            lines.append(f"  {f.kind:<8} {f.message}")
        if r.files:
            counts = Counter(v.level for v in r.files)
            lines.append(f"  {len(r.files)} file(s): " + ", ".join(f"{counts[lv]} {lv}" for lv in LEVELS if counts[lv]))
            lines += [f"    {v.level:<8} {v.file}" for v in r.files if v.level != "clean"]
        lines.append(f"  {_verdict(r)}")
    if sum(len(r.files) or 1 for r in results) > 1:
        lines += summary_table(results)
    lines.append(f"{len(bad)} of {len(results)} file(s) with findings" if bad else f"ok: {len(results)} file(s) clean")
    return "\n".join(lines)


def _levels(results: Sequence[ScanResult]) -> str:
    counts = Counter(r.level for r in results)
    return ", ".join(f"{counts[lv]} {lv}" for lv in reversed(LEVELS) if counts[lv] and lv != "clean")
