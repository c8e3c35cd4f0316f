"""Static analysis of a pickle: parse its opcodes (as ``pickletools.genops`` does: parsing, no execution) and
follow the unpickler's stack symbolically, without building one object.

It finds what a pickle *would* need: every global, resolved as the unpickler resolves it (``GLOBAL``
and ``STACK_GLOBAL``, strings fetched from the memo included), every opcode by class, bytes after
``STOP``, memo indices larger than the pickle (the C unpickler sizes its memo table by the largest
index: a 15-byte pickle can ask for gigabytes), and tuples whose expanded size (shared parts counted
each time they appear) is out of proportion with the pickle: hashing or comparing such a tuple (a dict
key, a set member) takes time exponential in the pickle's size.
"""
from __future__ import annotations

import pickletools
from collections import Counter
from dataclasses import dataclass, field

from .pickle_memo import BytesMemo

__all__ = ["PickleFacts", "analyze", "analyze_genops", "remember", "OPCODE_CLASSES", "opcode_class"]

# What each opcode makes the unpickler do, for people reading a scan.
OPCODE_CLASSES: dict[str, tuple[str, ...]] = {
    "call": ("REDUCE", "NEWOBJ", "NEWOBJ_EX", "INST", "OBJ"),
    "build": ("BUILD",),
    "global": ("GLOBAL", "STACK_GLOBAL"),
    "persistent-id": ("PERSID", "BINPERSID"),
    "extension": ("EXT1", "EXT2", "EXT4"),
    "memo": ("GET", "BINGET", "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"),
    "container": ("EMPTY_LIST", "APPEND", "APPENDS", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
                  "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_SET", "ADDITEMS", "FROZENSET"),
    "out-of-band": ("NEXT_BUFFER", "READONLY_BUFFER"),
    "stack": ("PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP"),
}
_CLASS_OF = {op: cls for cls, ops in OPCODE_CLASSES.items() for op in ops}


def opcode_class(name: str) -> str:
    return _CLASS_OF.get(name, "data")


@dataclass
class PickleFacts:
    """What ``analyze`` found; ``problems`` are reasons to refuse the pickle as it is."""

    size: int
    end: int = 0  # one past STOP
    globals: list[tuple[str, str, int]] = field(default_factory=list)  # (module, name, byte position)
    opcodes: Counter = field(default_factory=Counter)
    first_at: dict[str, int] = field(default_factory=dict)  # opcode -> byte position of its first use
    problems: list[str] = field(default_factory=list)
    malformed: str | None = None  # genops could not parse on (truncated, unknown opcode ...)
    largest_tuple: int = 0


_MEMO: BytesMemo[PickleFacts] = BytesMemo()


def analyze(data: bytes, budget: int) -> PickleFacts:
    """Parse ``data``'s first pickle; tuples whose expanded size passes ``budget`` are a problem.

    A well-formed pickle is walked by ``pickle_walk`` (bytes stepped over in place, several times faster than
    ``pickletools.genops``); anything else (damage, a memo index out of range, bytes after STOP) by
    ``analyze_genops``, whose findings and messages are the reference: both give the same facts. The facts of
    recent small pickles are remembered (``pickle_memo``): they are shared, not to be changed."""
    return _MEMO.get(data, budget, lambda: _analyze(data, budget))


def remember(data: bytes, budget: int, facts: PickleFacts) -> None:
    """``facts`` are ``analyze(data, budget)``, found by another walk (``pickle_walk.first_pickle``)."""
    _MEMO.put(data, budget, facts)


def _analyze(data: bytes, budget: int) -> PickleFacts:
    from .pickle_walk import Irregular, walk

    if not isinstance(data, (bytes, bytearray)):  # what genops takes for bytes; anything else is its to judge
        return analyze_genops(data, budget)
    try:
        return walk(data, budget)
    except Irregular:
        return analyze_genops(data, budget)


def analyze_genops(data: bytes, budget: int) -> PickleFacts:
    """``analyze`` on ``pickletools.genops``: every opcode and argument decoded by the standard library."""
    facts = PickleFacts(len(data))
    stack: list[tuple[str, int, str | None]] = []
    marks: list[int] = []
    memo: dict[int, tuple[str, int, str | None]] = {}

    def pop_mark() -> list[tuple[str, int, str | None]]:
        if not marks:
            raise ValueError("no MARK on the stack")
        at = marks.pop()
        items = stack[at:]
        del stack[at:]
        return items

    def pop(n: int = 1) -> list[tuple[str, int, str | None]]:
        if len(stack) - (marks[-1] if marks else 0) < n:
            raise ValueError("stack underflow")
        items = stack[len(stack) - n:]
        del stack[len(stack) - n:]
        return items

    def tuple_of(items: list[tuple[str, int, str | None]], pos: int) -> None:
        size = min(1 + sum(i[1] for i in items), budget + 1)
        told = facts.largest_tuple > budget  # the first tuple past the budget is the problem (a flag: no search)
        facts.largest_tuple = max(facts.largest_tuple, size)
        if size > budget and not told:
            facts.problems.append(f"a tuple at byte {pos} expands to more than {budget:,} elements (shared parts "
                                  "repeated); hashing or comparing it would not end")
        stack.append(("tuple", size, None))

    try:
        for op, arg, pos in pickletools.genops(data):
            name = op.name
            facts.opcodes[name] += 1
            facts.first_at.setdefault(name, pos)
            facts.end = pos + 1
            if name == "MARK":
                marks.append(len(stack))
            elif name in ("STOP", "PROTO", "FRAME"):
                pass
            elif name == "POP":
                if marks and marks[-1] == len(stack):
                    marks.pop()
                else:
                    pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(pop()[0])
                stack.append(stack[-1])
            elif name in ("STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
                          "BINUNICODE8"):
                stack.append(("str", 1, arg if isinstance(arg, str) else None))
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise ValueError(f"memo key {arg} was never stored")
                stack.append(memo[arg])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if not 0 <= arg <= len(data):  # the C unpickler grows its memo table to the index: GBs from 5 bytes
                    facts.problems.append(f"memo index {arg:,} at byte {pos} is larger than the pickle ({len(data):,} "
                                          "bytes); the unpickler would allocate a table that large")
                    return facts
                memo[arg] = stack[-1] if stack else ("obj", 1, None)
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else ("obj", 1, None)
            elif name == "GLOBAL":
                module, _, gname = str(arg).partition(" ")
                facts.globals.append((module, gname, pos))
                stack.append(("obj", 1, None))
            elif name == "STACK_GLOBAL":
                mod, gname = pop(2)
                if mod[0] != "str" or gname[0] != "str" or mod[2] is None or gname[2] is None:
                    facts.problems.append(f"STACK_GLOBAL at byte {pos} takes names that are not plain strings")
                    facts.globals.append(("?", "?", pos))
                else:
                    facts.globals.append((mod[2], gname[2], pos))
                stack.append(("obj", 1, None))
            elif name in ("TUPLE", "LIST", "DICT", "FROZENSET", "INST"):
                if name == "INST":  # INST names its class in its argument, like GLOBAL
                    module, _, gname = str(arg).partition(" ")
                    facts.globals.append((module, gname, pos))
                items = pop_mark()
                if name == "TUPLE":
                    tuple_of(items, pos)
                else:
                    stack.append(("obj", 1, None))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                tuple_of(pop(int(name[-1])), pos)
            elif name == "EMPTY_TUPLE":
                tuple_of([], pos)
            elif name in ("APPEND", "BUILD", "BINPERSID"):
                pop()
                if name == "BINPERSID":
                    stack.append(("obj", 1, None))
            elif name == "SETITEM":
                pop(2)
            elif name in ("APPENDS", "SETITEMS", "ADDITEMS"):
                pop_mark()
            elif name in ("REDUCE", "NEWOBJ"):
                pop(2)
                stack.append(("obj", 1, None))
            elif name == "NEWOBJ_EX":
                pop(3)
                stack.append(("obj", 1, None))
            elif name == "OBJ":
                pop_mark()
                stack.append(("obj", 1, None))
            else:  # every other opcode pushes one value (numbers, bytes, None, bools, empty containers, ids)
                stack.append(("obj", 1, None))
    except Exception as exc:  # noqa: BLE001 - genops and the stack model fail the same way on damage
        facts.malformed = f"{type(exc).__name__}: {exc}"
        return facts
    if facts.end < len(data):
        facts.problems.append(f"{len(data) - facts.end} bytes follow the pickle's STOP opcode (a hidden second pickle?)")
    return facts
