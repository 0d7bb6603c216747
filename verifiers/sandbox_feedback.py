"""Verdict.detail: what went wrong on a code task's first failing test, as short plain text for SDPO's
teacher prompt (teacher_context.feedback). verifiers/sandbox.py's docstring ("Feedback") says what each
kind of failure gives; this file formats it, apart from the verifier so that the verdicts stay readable.

Everything here runs in the parent on what the sandbox reported: quoted values are cut before they are
formatted, non-printable characters are escaped, and a detail that cannot be made is None (never a
traceback).
"""
from __future__ import annotations

import ast
import json


DETAIL_VALUE_CHARS = 300  # each value a detail quotes: an input, output, expected value, message, source
DETAIL_CHARS = 1200  # the whole detail


def detail(make, *args) -> str | None:
    """make(*args)'s text cut to DETAIL_CHARS in all; None if it fails (a detail is never worth a traceback)."""
    try:
        text = make(*args)
    except Exception:  # noqa: BLE001 (RecursionError, MemoryError, ...)
        return None
    if text is None or len(text) <= DETAIL_CHARS:
        return text
    keep = DETAIL_CHARS
    while True:  # the suffix counts what is cut, and the whole stays within DETAIL_CHARS
        suffix = f" ... ({len(text) - keep} more characters)"
        if keep + len(suffix) <= DETAIL_CHARS:
            return text[:keep] + suffix
        keep = DETAIL_CHARS - len(suffix)


def shown(text: str, limit: int = DETAIL_VALUE_CHARS) -> str:
    """`text` as a detail quotes it: control and other non-printable characters but newline and tab escaped as
    repr writes them (so no terminal escape gets through), cut to `limit` characters with the count of the
    rest. It reads at most limit + 1 characters of `text`."""
    out, used = [], 0
    for i, c in enumerate(text):
        piece = c if c.isprintable() or c == "\n" or c == "\t" else repr(c)[1:-1]
        if used + len(piece) > limit:
            return "".join(out) + f" ... ({len(text) - i} more characters)"
        out.append(piece)
        used += len(piece)
    return "".join(out)


def block(text: str) -> str:
    """An input or output on lines of its own: trailing newlines dropped, "(empty)" when nothing is left."""
    text = text.rstrip("\n")
    return shown(text) if text else "(empty)"


def exit_detail(n: int, run, stdin: str) -> str:
    error = ""
    for line in reversed(run.stderr.decode("utf-8", "replace").split("\n")):  # stderr is capped at 64 KiB
        if line.strip():
            error = f"\nError: {shown(line.strip())}"  # a traceback's last line: "ValueError: message"
            break
    return f"Test {n}: the program exited with status {run.returncode}.{error}\nInput:\n{block(stdin)}"


def compile_detail(e: Exception) -> str:
    if isinstance(e, SyntaxError):
        where = f" (line {e.lineno})" if type(e.lineno) is int else ""
        return f"The program does not compile: {shown(str(e.msg))}{where}."
    message = str(e)
    return f"The program does not compile: {shown(message)}." if message else "The program does not compile."


def _failure(payload: str) -> tuple[str | None, int | None]:
    """A failed test's result payload (sandbox_child._child_attempt) as (text, line): the exception's "Name:
    message" (None if unknown) and, for a raw test, the line of its source where it failed (None if unknown)."""
    try:
        value = json.loads(payload)
    except Exception:  # noqa: BLE001
        return None, None
    text, line = value if type(value) is list and len(value) == 2 else (value, None)
    return (text if type(text) is str and text else None), (line if type(line) is int else None)


def _raised(text: str | None) -> str:
    return shown(text) if text else "an exception"


def load_detail(status: str, payload: str) -> str:
    if status == "syntax":
        return "The program does not compile."
    if status == "timeout":
        return "The program ran out of time when it was run."
    return f"The program raised {_raised(_failure(payload)[0])} when it was run."


class _Opaque:
    """What a detail shows for a value that has no plain form (an `__unplain__` marker)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _decoded(enc, key: bool = False):
    """A Python value whose repr is the encoded value's (_encode's): lists as lists (as tuples where they must
    be hashable: dict keys, set members), dicts, sets and bytes as themselves."""
    if type(enc) is list:
        items = [_decoded(v, key) for v in enc]
        return tuple(items) if key else items
    if type(enc) is not dict:
        return enc
    if "__dict__" in enc:
        return {_decoded(k, True): _decoded(v, key) for k, v in enc["__dict__"]}
    if "__set__" in enc:
        return (frozenset if key else set)(_decoded(v, True) for v in enc["__set__"])
    if "__bytes__" in enc:
        return bytes.fromhex(enc["__bytes__"])
    name = enc.get("__unplain__")
    return _Opaque("<data nested too deeply>" if name == "too deep" else f"<a value of type {name}>")


def _value_text(enc) -> str:
    try:
        return repr(_decoded(enc))
    except Exception:  # noqa: BLE001 (an int too long to print, a malformed encoding)
        return "<a value that cannot be shown>"


def _got_text(payload: str) -> str:
    got = json.loads(payload)
    if "{" not in payload:  # lists and scalars only: the decoded JSON is the value, and repr runs at C speed
        try:
            return repr(got)
        except ValueError:  # an int too long to print
            return "<a value that cannot be shown>"
    return _value_text(got)


def _call_text(test, entry_point: str) -> str:
    """The call a call test or parsed assert makes: literal arguments as their source, JSON ones by repr."""
    child = test.child
    if "args_literal" in child:
        args = [ast.unparse(a) for a in ast.parse(child["args_literal"], mode="eval").body.elts]
        kwargs = ast.parse(child["kwargs_literal"], mode="eval").body
        args += [f"{k.value}={ast.unparse(v)}" for k, v in zip(kwargs.keys, kwargs.values)]
    else:
        args = [repr(a) for a in json.loads(child["args"])]
        args += [f"{k}={v!r}" for k, v in json.loads(child["kwargs"]).items()]
    return f"{entry_point}({', '.join(args)})"


def test_detail(n: int, test, entry_point: str, status: str, payload: str, outcome: str) -> str:
    """What went wrong on test n (1-based) of a call or assert task, from its result line."""
    text, line = _failure(payload) if status != "ok" else (None, None)
    if "code" in test.child:  # a raw test: it ran whole in the tester
        source = test.child["code"]
        lines = source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        at, quoted = "", source
        if line is not None and len(lines) > 1 and 1 <= line <= len(lines):
            at = f" at line {line}"
            if len(source) > DETAIL_VALUE_CHARS:  # too long to quote whole: the line it failed on
                quoted = lines[line - 1].strip()
        how = {"fail": "failed", "timeout": "ran out of time"}.get(status, f"raised {_raised(text)}")
        return f"Test {n} {how}{at}:\n{shown(quoted)}"
    call = shown(_call_text(test, entry_point))
    if status == "timeout":
        return f"Test {n}: {call} ran out of time."
    if status != "ok":
        return f"Test {n}: {call} raised {_raised(text)}"
    if outcome != "mismatch":
        return f"Test {n}: {call} returned a value that cannot be read."
    how, want = test.expect
    expected = ("a true value" if want else "a false value") if how == "truthy" else shown(_value_text(want))
    return f"Test {n} failed.\nCall: {call}\nExpected: {expected}\nGot: {shown(_got_text(payload))}"
