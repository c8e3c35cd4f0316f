"""Validation and scan findings as text, JSON, GitHub workflow annotations or JUnit XML.

``validate`` reports one ``FileReport`` per checked file: its findings, a ``Case`` per tensor and check (JUnit:
one test case each, ``<skipped/>`` for the checks that did not run) and, for a file that could not be read at
all, an ``error`` line that every format still reports (an annotation, a failing test case).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .findings import KINDS, Case, Finding

if TYPE_CHECKING:  # the reports that need it import it: text and JSON reports do without (start-up)
    from xml.etree import ElementTree as ET

__all__ = ["render", "render_reports", "FileReport", "FORMATS", "format_counts", "escape_github", "escape_property",
           "junit_suite"]

FORMATS = ("text", "json", "github", "junit")


@dataclass
class FileReport:
    """One checked file against one reference (a lock file or a checkpoint)."""

    file: str
    reference: str
    findings: list[Finding] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    error: str | None = None  # the file (or the reference) could not be read: one line naming it and the fix

    @property
    def ok(self) -> bool:
        return not self.findings and self.error is None

    def as_dict(self) -> dict[str, Any]:
        counts = {s: sum(c.status == s for c in self.cases) for s in ("passed", "failed", "skipped")}
        return {"file": self.file, "reference": self.reference, "ok": self.ok, "error": self.error,
                "findings": [f.as_dict() for f in self.findings], "checks": counts}


def escape_github(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_github(text).replace(":", "%3A").replace(",", "%2C")


def render(findings: Sequence[Finding], fmt: str, *, checkpoint: str, reference: str) -> str:
    """The report of one file's findings (``render_reports`` for several files, test cases and unreadable inputs)."""
    return render_reports([FileReport(checkpoint, reference, list(findings))], fmt)


def render_reports(reports: Sequence[FileReport], fmt: str) -> str:
    """Every file's report in one document of ``fmt`` (one of ``FORMATS``)."""
    if fmt == "json":
        return _json(reports)
    if fmt == "github":
        return _github(reports)
    if fmt == "junit":
        return _junit(reports)
    return _text(reports)


def _json(reports: Sequence[FileReport]) -> str:
    out: dict[str, Any] = {}
    if len(reports) == 1:
        out["checkpoint"] = reports[0].file
    out["reference"] = reports[0].reference if reports else None
    out["ok"] = all(r.ok for r in reports)
    out["findings"] = [dict(f.as_dict(), file=r.file) for r in reports for f in r.findings]
    out["errors"] = [{"file": r.file, "message": r.error} for r in reports if r.error]
    out["files"] = [r.as_dict() for r in reports]
    return json.dumps(out, indent=2, default=str)


def _github(reports: Sequence[FileReport]) -> str:
    lines = []
    for r in reports:
        where = escape_property(r.file)
        if r.error:
            lines.append(f"::error file={where},title=ckptsurgeon unreadable::{escape_github(r.error)}")
        lines += [f"::error file={where},title=ckptsurgeon {f.kind}::{escape_github(f.message)}" for f in r.findings]
        if r.ok:
            lines.append(f"::notice file={where},title=ckptsurgeon::matches {escape_github(r.reference)}")
        elif not r.error:
            lines.append(f"::notice file={where},title=ckptsurgeon::{len(r.findings)} finding(s) against "
                         f"{escape_github(r.reference)}")
    return "\n".join(lines)


def _text(reports: Sequence[FileReport]) -> str:
    lines = []
    for r in reports:
        if r.error:
            lines.append(f"error      {r.error}")
        lines += [f"{f.kind:<10} {f.message}" for f in r.findings]
        if r.error:
            lines.append(f"not checked: {r.file} against {r.reference}")
        elif r.findings:
            lines.append(f"{len(r.findings)} finding(s): {r.file} does not match {r.reference}")
        else:
            lines.append(f"ok: {r.file} matches {r.reference}")
    if len(reports) > 1:
        bad = sum(not r.ok for r in reports)
        lines.append(f"{bad} of {len(reports)} files do not match" if bad else f"ok: all {len(reports)} files match")
    return "\n".join(lines)


def _junit(reports: Sequence[FileReport]) -> str:
    from xml.etree import ElementTree as ET

    root = ET.Element("testsuites", name="ckptsurgeon validate")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for r in reports:
        suite = ET.SubElement(root, "testsuite", name=f"ckptsurgeon validate {r.file}")
        cls = f"ckptsurgeon.validate.{r.file}"
        n = dict.fromkeys(totals, 0)
        if r.error:
            case = ET.SubElement(suite, "testcase", classname=cls, name="read")
            ET.SubElement(case, "failure", type="unreadable", message=r.error).text = r.error
            n["tests"] += 1
            n["failures"] += 1
        if r.cases:
            for c in r.cases:
                case = ET.SubElement(suite, "testcase", classname=cls, name=f"{c.name or '/'} {c.check}")
                n["tests"] += 1
                if c.status == "failed":
                    ET.SubElement(case, "failure", type=c.check, message=c.message.split("\n")[0]).text = c.message
                    n["failures"] += 1
                elif c.status == "skipped":
                    ET.SubElement(case, "skipped", message=c.message)
                    n["skipped"] += 1
        elif not r.error:  # findings without cases (the library's ``render``): one test case per finding kind
            for kind in KINDS:
                case = ET.SubElement(suite, "testcase", classname=cls, name=kind)
                found = [f for f in r.findings if f.kind == kind]
                n["tests"] += 1
                if found:
                    failure = ET.SubElement(case, "failure", type=kind, message=f"{len(found)} {kind} finding(s)")
                    failure.text = "\n".join(f.message for f in found)
                    n["failures"] += 1
        for k, v in n.items():
            suite.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        root.set(k, str(v))
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def junit_suite(parent: ET.Element | None, name: str, file: str, kinds: Sequence[str], findings: Sequence[Finding]) -> ET.Element:
    from xml.etree import ElementTree as ET

    attrs = dict(name=name, tests=str(len(kinds)), failures=str(len({f.kind for f in findings})), errors="0")
    suite = ET.Element("testsuite", attrs) if parent is None else ET.SubElement(parent, "testsuite", attrs)
    for kind in kinds:
        case = ET.SubElement(suite, "testcase", classname=f"ckptsurgeon.{file}", name=kind)
        found = [f for f in findings if f.kind == kind]
        if found:
            failure = ET.SubElement(case, "failure", type=kind, message=f"{len(found)} {kind} finding(s)")
            failure.text = "\n".join(f.message for f in found)
    return suite


def format_counts(counter: dict) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(counter.items()))
