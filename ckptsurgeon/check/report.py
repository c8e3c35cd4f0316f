"""Validation findings as text, JSON, GitHub workflow annotations or JUnit XML."""
from __future__ import annotations

import json
from collections.abc import Sequence
from xml.etree import ElementTree as ET

from .validate import KINDS, Finding

__all__ = ["render", "FORMATS"]

FORMATS = ("text", "json", "github", "junit")


def _escape_github(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def render(findings: Sequence[Finding], fmt: str, *, checkpoint: str, reference: str) -> str:
    if fmt == "json":
        return json.dumps({"checkpoint": checkpoint, "reference": reference, "ok": not findings,
                           "findings": [f.as_dict() for f in findings]}, indent=2, default=str)
    if fmt == "github":
        lines = [f"::error file={checkpoint},title=ckptsurgeon {f.kind}::{_escape_github(f.message)}" for f in findings]
        lines.append(f"::notice file={checkpoint},title=ckptsurgeon::"
                     + (f"{len(findings)} finding(s) against {reference}" if findings else f"matches {reference}"))
        return "\n".join(lines)
    if fmt == "junit":
        suite = ET.Element("testsuite", name="ckptsurgeon validate", tests=str(len(KINDS)),
                           failures=str(len({f.kind for f in findings})), errors="0")
        for kind in KINDS:
            case = ET.SubElement(suite, "testcase", classname=f"ckptsurgeon.{checkpoint}", name=kind)
            found = [f for f in findings if f.kind == kind]
            if found:
                failure = ET.SubElement(case, "failure", type=kind, message=f"{len(found)} {kind} finding(s)")
                failure.text = "\n".join(f.message for f in found)
        return ET.tostring(suite, encoding="unicode", xml_declaration=True)
    if not findings:
        return f"ok: {checkpoint} matches {reference}"
    lines = [f"{f.kind:<10} {f.message}" for f in findings]
    lines.append(f"{len(findings)} finding(s): {checkpoint} does not match {reference}")
    return "\n".join(lines)
