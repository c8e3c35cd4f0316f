"""``analyze`` of a well-formed pickle, stepping over the bytes in place instead of through ``pickletools.genops``.

It follows the same stack model as ``pickle_static.analyze_genops`` and reads each argument as genops' readers do
(text-line arguments through those very readers). Whatever it does not take for certain (a truncated or damaged
argument, an unknown opcode, a stack-model error, a memo index out of range) raises ``Irregular``: the caller then
runs ``analyze_genops``, whose facts and messages are the reference. Tests compare the two on every pickle they meet.
"""
from __future__ import annotations

import io
import pickletools
import sys
from collections import Counter
from typing import Any

from ..tree import work_budget
from .pickle_memo import BytesMemo
from .pickle_static import PickleFacts, remember

__all__ = ["walk", "first_pickle", "Irregular", "Truncated"]


class Irregular(Exception):
    """The pickle is not one this walk is certain of: ``analyze_genops`` reads it."""


class Truncated(Irregular):
    """The bytes end inside the pickle, exactly where ``genops`` would run out of them too (``stream`` walks)."""


# What each opcode does to the modelled stack (``walk``'s dispatch), by the names analyze_genops tests; any
# other opcode pushes one value.
_ACTIONS: dict[str, tuple[str, ...]] = {
    "push": (),
    "mark": ("MARK",),
    "none": ("STOP", "PROTO", "FRAME"),
    "pop": ("POP",),
    "pop_mark": ("POP_MARK",),
    "dup": ("DUP",),
    "str": ("STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"),
    "get": ("GET", "BINGET", "LONG_BINGET"),
    "put": ("PUT", "BINPUT", "LONG_BINPUT"),
    "memoize": ("MEMOIZE",),
    "global": ("GLOBAL",),
    "inst": ("INST",),
    "stack_global": ("STACK_GLOBAL",),
    "tuple": ("TUPLE",),
    "marked": ("LIST", "DICT", "FROZENSET"),
    "tuple_n": ("TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"),
    "pop1": ("APPEND", "BUILD"),
    "persid": ("BINPERSID",),
    "pop2": ("SETITEM",),
    "pop_marked": ("APPENDS", "SETITEMS", "ADDITEMS"),
    "call": ("REDUCE", "NEWOBJ"),
    "call_ex": ("NEWOBJ_EX",),
    "obj": ("OBJ",),
}
(PUSH, MARK, NONE, POP, POP_MARK, DUP, STR, GET, PUT, MEMOIZE, GLOBAL, INST, STACK_GLOBAL, TUPLE, MARKED, TUPLE_N, POP1,
 PERSID, POP2, POP_MARKED, CALL, CALL_EX, OBJ) = range(len(_ACTIONS))

# How each argument is read: (kind, size). Kinds: 1 fixed size, skipped; 2 fixed size, an unsigned little-endian
# value (memo indices); 3 a length of ``size`` bytes (unsigned), then that many bytes skipped; 4 the same with a
# signed length; 5 a length (unsigned), then latin-1 text; 6 a signed length, then latin-1 text; 7 a length
# (unsigned), then UTF-8 text (``surrogatepass``); 8 (the others) a text line, read by genops' own reader.
_READS = {
    "uint1": (1, 1), "uint2": (1, 2), "int4": (1, 4), "uint4": (1, 4), "uint8": (1, 8), "float8": (1, 8),
    "long1": (3, 1), "long4": (4, 4), "bytes1": (3, 1), "bytes4": (3, 4), "bytes8": (3, 8), "bytearray8": (3, 8),
    "string1": (5, 1), "string4": (6, 4),
    "unicodestring1": (7, 1), "unicodestring4": (7, 4), "unicodestring8": (7, 8),
}
_MEMO_VALUE = {"BINGET", "LONG_BINGET", "BINPUT", "LONG_BINPUT"}


def _tables() -> tuple[list[int], list[int], list[int], list[Any], list[str]]:
    """Per opcode byte: its action (-1: unknown), how its argument is read (kind, size, genops' reader), its name."""
    action, kind, size, name = [-1] * 256, [0] * 256, [0] * 256, [""] * 256
    reader: list[Any] = [None] * 256
    by_name = {op: i for i, ops in enumerate(_ACTIONS.values()) for op in ops}
    for op in pickletools.opcodes:
        code = op.code.encode("latin-1")[0]
        name[code], action[code] = op.name, by_name.get(op.name, PUSH)
        if op.arg is None:
            continue
        if op.arg.name in _READS:
            kind[code], size[code] = _READS[op.arg.name]
            kind[code] = 2 if op.name in _MEMO_VALUE else kind[code]
        else:  # a text line (protocol 0): decimal numbers, quoted strings, "module\nname\n"
            kind[code], reader[code] = 8, op.arg.reader
    return action, kind, size, reader, name


_ACTION, _KIND, _SIZE, _READER, _NAME = _tables()
_STOP, _BINPUT, _BINGET = ord("."), ord("q"), ord("h")
_FIRST: BytesMemo[PickleFacts] = BytesMemo()
_OBJ = ("obj", 1, None)


def first_pickle(head: bytes) -> PickleFacts:
    """``analyze(pickle)`` of the pickle that starts ``head`` (other bytes may follow its STOP): ``facts.end`` says
    where it ends. ``Truncated`` when ``head`` ends inside it (read more), ``Irregular`` when only genops can tell.
    Remembered for recent small heads (``pickle_memo``; ``scan`` and ``ls`` both look for a legacy file's pickles):
    the facts are shared, not to be changed."""
    return _FIRST.get(head, None, lambda: _first_pickle(head))


def _first_pickle(head: bytes) -> PickleFacts:
    if not isinstance(head, (bytes, bytearray)):
        raise Irregular  # genops decides what it is
    facts = walk(head, work_budget(len(head)), stream=True)
    exact = work_budget(facts.end)
    if facts.largest_tuple > exact:  # the budget of the pickle's own size decides: walk it alone
        return walk(head[:facts.end], exact)
    facts.size = facts.end
    remember(head[:facts.end], exact, facts)  # what analyze() of the pickle alone gives: ls asks for it next
    return facts


def walk(data: bytes, budget: int, *, stream: bool = False) -> PickleFacts:
    """``analyze_genops(data, budget)`` for a well-formed pickle; ``Irregular`` for anything else. ``stream``: bytes
    after STOP are not a problem (the walk only finds the pickle's end), and running out of them is ``Truncated``."""
    facts = PickleFacts(len(data))
    stack: list[tuple[str, int, str | None]] = []
    marks: list[int] = []
    memo: dict[int, tuple[str, int, str | None]] = {}
    counts = [0] * 256
    first = [0] * 256
    order: list[int] = []  # opcodes in the order of their first use
    end, pos = len(data), 0
    action_of, kind_of, size_of = _ACTION, _KIND, _SIZE
    text: io.BytesIO | None = None
    push = stack.append
    while True:
        if pos >= end:
            raise Truncated
        code = data[pos]
        if counts[code]:
            counts[code] += 1
        elif action_of[code] < 0:
            raise Irregular
        else:
            counts[code], first[code] = 1, pos
            order.append(code)
        # the commonest opcodes of a torch pickle first: a memo store or read by a 1-byte index, a pushed number
        if code == _BINPUT:
            if pos + 2 > end:
                raise Truncated
            index = data[pos + 1]
            if index > end:
                raise Irregular  # the memo index bomb: the reference words the problem
            memo[index] = stack[-1] if stack else _OBJ
            pos += 2
            continue
        if code == _BINGET:
            if pos + 2 > end:
                raise Truncated
            item = memo.get(data[pos + 1])
            if item is None:
                raise Irregular
            push(item)
            pos += 2
            continue
        action = action_of[code]
        if action == PUSH and kind_of[code] < 2:
            pos += 1 + size_of[code]
            if pos > end:
                raise Truncated
            push(_OBJ)
            continue
        at, pos = pos, pos + 1
        kind = kind_of[code]
        arg: Any = None
        if kind:
            n = size_of[code]
            if kind == 1:
                pos += n
            elif kind == 2:
                arg = int.from_bytes(data[pos:pos + n], "little")
                pos += n
            elif kind == 8:
                if text is None:
                    text = io.BytesIO(data)
                text.seek(pos)
                try:
                    arg = _READER[code](text)
                except Exception as exc:  # noqa: BLE001 - genops fails here the same way: the reference says how
                    # out of bytes only when genops' reader found no newline: a whole line that does not parse
                    # fails however many bytes follow
                    raise (Truncated if str(exc).startswith("no newline found") else Irregular) from exc
                pos = text.tell()
            else:
                if pos + n > end:
                    raise Truncated
                length = int.from_bytes(data[pos:pos + n], "little", signed=kind in (4, 6))
                pos += n
                if length < 0 or length > sys.maxsize:
                    raise Irregular
                if pos + length > end:
                    raise Truncated
                if kind == 5 or kind == 6:
                    arg = data[pos:pos + length].decode("latin-1")
                elif kind == 7:
                    try:
                        arg = str(data[pos:pos + length], "utf-8", "surrogatepass")
                    except UnicodeDecodeError as exc:
                        raise Irregular from exc
                pos += length
            if pos > end:
                raise Truncated
        # the stack model of analyze_genops, opcode for opcode
        if action == PUSH:
            push(_OBJ)
        elif action == GET:
            item = memo.get(arg)
            if item is None:
                raise Irregular
            push(item)
        elif action == PUT:
            if not 0 <= arg <= end:
                raise Irregular  # the memo index bomb: the reference words the problem
            memo[arg] = stack[-1] if stack else _OBJ
        elif action == STR:
            push(("str", 1, arg if isinstance(arg, str) else None))
        elif action == MARK:
            marks.append(len(stack))
        elif action == NONE:
            if code == _STOP:
                break
        elif action == TUPLE_N:
            _tuple(facts, _pop(stack, marks, 0 if code == 0x29 else code - 0x84), at, budget, push)  # ")" or TUPLE1..3
        elif action == TUPLE:
            _tuple(facts, _pop_mark(stack, marks), at, budget, push)
        elif action == MARKED:
            _pop_mark(stack, marks)
            push(_OBJ)
        elif action == POP1:
            _pop(stack, marks, 1)
        elif action == POP2:
            _pop(stack, marks, 2)
        elif action == POP_MARKED:
            _pop_mark(stack, marks)
        elif action == CALL:
            _pop(stack, marks, 2)
            push(_OBJ)
        elif action == GLOBAL or action == INST:  # INST names its class in its argument, like GLOBAL
            module, _, gname = str(arg).partition(" ")
            facts.globals.append((module, gname, at))
            if action == INST:
                _pop_mark(stack, marks)
            push(_OBJ)
        elif action == STACK_GLOBAL:
            mod, name = _pop(stack, marks, 2)
            if mod[0] != "str" or name[0] != "str" or mod[2] is None or name[2] is None:
                facts.problems.append(f"STACK_GLOBAL at byte {at} takes names that are not plain strings")
                facts.globals.append(("?", "?", at))
            else:
                facts.globals.append((mod[2], name[2], at))
            push(_OBJ)
        elif action == MEMOIZE:
            memo[len(memo)] = stack[-1] if stack else _OBJ
        elif action == POP:
            if marks and marks[-1] == len(stack):
                marks.pop()
            else:
                _pop(stack, marks, 1)
        elif action == POP_MARK:
            _pop_mark(stack, marks)
        elif action == DUP:
            push(_pop(stack, marks, 1)[0])
            push(stack[-1])
        elif action == PERSID:
            _pop(stack, marks, 1)
            push(_OBJ)
        elif action == CALL_EX:
            _pop(stack, marks, 3)
            push(_OBJ)
        elif action == OBJ:
            _pop_mark(stack, marks)
            push(_OBJ)
        else:  # pragma: no cover - every action is dispatched above
            raise Irregular
    if stream and memo and max(memo) > pos:
        raise Irregular  # a memo index past the pickle's own end (known only now): the reference words the problem
    facts.end = pos
    facts.opcodes = Counter({_NAME[c]: counts[c] for c in order})
    facts.first_at = {_NAME[c]: first[c] for c in order}
    if facts.end < end and not stream:
        facts.problems.append(f"{end - facts.end} bytes follow the pickle's STOP opcode (a hidden second pickle?)")
    return facts


def _pop(stack: list[tuple[str, int, str | None]], marks: list[int], n: int) -> list[tuple[str, int, str | None]]:
    if len(stack) - (marks[-1] if marks else 0) < n:
        raise Irregular
    items = stack[len(stack) - n:]
    del stack[len(stack) - n:]
    return items


def _pop_mark(stack: list[tuple[str, int, str | None]], marks: list[int]) -> list[tuple[str, int, str | None]]:
    if not marks:
        raise Irregular
    at = marks.pop()
    items = stack[at:]
    del stack[at:]
    return items


def _tuple(facts: PickleFacts, items: list[tuple[str, int, str | None]], at: int, budget: int, push: Any) -> None:
    size = min(1 + sum([i[1] for i in items]), budget + 1)
    told = facts.largest_tuple > budget  # the first tuple past the budget is the problem (one flag, not a search)
    if size > facts.largest_tuple:
        facts.largest_tuple = size
    if size > budget and not told:
        facts.problems.append(f"a tuple at byte {at} expands to more than {budget:,} elements (shared parts "
                              "repeated); hashing or comparing it would not end")
    push(("tuple", size, None))
