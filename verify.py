"""Rewards: the binary verdict r that every other part of SD-Zero trusts.

`check_math(response, gold) -> Verdict` decides whether a model's final answer equals the gold answer.
It never raises, and returns within its budget from any thread. `Verdict.reason` says why:
`correct`; `no_answer` (nothing to extract); `mismatch`; `parse_error` (cannot be read as mathematics);
`timeout` (the time or memory budget ran out, or the input was refused because evaluating it would
exceed the budget, e.g. `10^{10^{10}}`).

What it checks, in order:
  1. Extraction (`extract_answer`): only the text after the last `</think>` (a `<think>` that never
     closes means the model never answered); the LAST brace-matched non-empty `\\boxed{...}`/`\\fbox{...}`;
     only when there is no box, the last answer marker ("final answer is X", "the answer is X",
     "Answer: X", GSM8K's "#### X"). Boxes written side by side (`\\boxed{2} and \\boxed{3}`) form one
     list; joined by "or" they form a hedge. There is deliberately no "last number anywhere" fallback:
     it would reward any number that happens to appear in the working.
  2. Hedges (`5 \\text{ or } 7`, `\\boxed{5} or \\boxed{7}`) never score, unless the gold itself has
     several values (`x = 1 \\text{ or } x = -1` for gold `\\pm 1`). A list of candidates never scores:
     a list only matches a list of the same length.
  3. Normalisation (`_normalize`, string work): delimiters, `\\left/\\right`, spacing, `\\dfrac`/`\\tfrac`/
     `\\frac13`/`\\sqrt2`, `\\$`, units in `\\text{}`/`\\mbox{}`/`\\mathrm{}` or as trailing words
     (`5 \\text{ cm}^2`, `7 apples`), degrees, thousands separators (`1,000`, `1{,}000`, `1,\\!000`,
     `1\\,000`; `32, 349` is a pair), a leading phrase (`\\text{The area is } 6`), `x \\in`, `(x, y) =`,
     `\\emptyset`, multiple-choice letters (`\\text{(B)}`, `(C) 12` for gold `C`).
  4. Structure (`_compare`): tuples and intervals compare in order and their brackets must agree
     (`(1, 2]` is not `(1, 2)`); sets and bare comma lists (MATH's "enter all solutions") in any order,
     each element used once; unions of intervals in any order; matrices (pmatrix/bmatrix/array/...) by
     shape, element-wise; `a \\pm b` is the list {a+b, a-b}; a chain `1 < x \\le 3` is its two relations.
  5. Scalars (`_compare_scalar`): `x = 3` compares as `3`; `12 + 15 = 27` as `27`. Percent: `v%` on one
     side matches `v` or `v/100` on the other (the usual grader convention: gold `25\\%` accepts `25\\%`,
     `25` and `0.25`; gold `0.25` accepts `25\\%`; `25` never matches `0.25`, nor `0.25\\%` `25\\%`).
     Bases: digit strings in the same base, never values (`1011_2` matches `1011_{2}` and a bare `1011`
     either way round; not `11`, not `1011_3`). Words compare case- and space-insensitively.
  6. Exact numbers (`parse_number`): integers, decimals, fractions, mixed numbers (`4 4/9`), repeating
     decimals (`0.\\overline{3}`), scientific notation (`1.5 \\times 10^3`, `2.5e-4`) compare as
     `fractions.Fraction`, never floats, in this process and without importing sympy (the trainer calls
     this thousands of times): about 0.1 ms.
  7. Everything else goes to sympy, in a worker: size guards (`_guard`, run before anything is sent)
     refuse towers, huge powers and factorials and over-long inputs; `sympy.parsing.latex.parse_latex`
     (lark backend) parses both sides; numbers compare by exact rational arithmetic, then
     `simplify(a - b) == 0`, then numerically at 30 digits with relative tolerance 1e-9; expressions with
     variables by simplification, then at three arbitrary points; equations match when one is a non-zero
     multiple of the other (scaled, rearranged, negated), inequalities a positive multiple after flipping
     `>` into `<`. Lark's Earley parser makes this 40-300 ms per new expression on a 2-core CPU; parses
     are cached, so a gold or answer seen before costs about a millisecond.

The hard limit: sympy runs only in worker processes (`_Worker`: `python -c "import verify; ..."` from
this file's folder, never fork: the trainer has torch threads), each started lazily (about a second:
sympy's import and a parser warm-up) and reused; the parent never imports sympy. Each request has a soft
limit inside the worker (`SYMPY_TIME_LIMIT_S`, SIGALRM on the worker's main thread: it answers `timeout`
and lives on) and a hard wall-clock limit in the parent (`HARD_TIME_LIMIT_S`, poll on the pipe): past it
the worker's process group is killed and reaped, the verdict is `timeout`, and the next request starts a
new worker. This stops what signals cannot (long big-integer work in C) and works off the main thread. A
worker has `WORKER_MEMORY_BYTES` of address space and a per-request CPU-time backstop, and exits when
its parent goes (EOF on stdin, or a watchdog on its parent pid). A pool of up to `MAX_WORKERS` serves
threads in parallel. Budget of one call: `HARD_TIME_LIMIT_S`, plus a worker start when none is idle, plus,
when more than `MAX_WORKERS` threads check at once, the wait for a free worker.

What it does not do:
  * Decide what the guards refuse: `10^{10^{10}}` against `10^{10000000000}` is `timeout`, not `correct`
    (only identical strings match there). Sums, products, integrals and limits are refused.
  * Convert units: `5 \\text{ km}` equals `5`, and so does `5 \\text{ m}`; the unit is dropped.
  * Accept a format other than the gold's: `x > 2` does not match `(2, \\infty)`, a column vector does
    not match a tuple, degrees do not match radians, `1.41421356` does not match `\\sqrt{2}`.
  * Read ambiguous LaTeX: where lark finds two different readings the verdict is `parse_error`.
  * Give plain text to `sympy.sympify` (it calls `eval`): everything goes through the LaTeX parser.
"""
from __future__ import annotations

import atexit
import functools
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction

REASONS = ("correct", "no_answer", "mismatch", "parse_error", "timeout")
MAX_SYMPY_CHARS = 200  # longer scalars are refused before sympy (its Earley parser is cubic)
MAX_SCALAR_CHARS = 1_000  # longer single values are compared as strings only
MAX_PARTS = 20  # tuples, sets, lists and matrices with more elements are not compared
MAX_REQUEST_CHARS = 2 * MAX_PARTS * MAX_SYMPY_CHARS  # the most that is sent to a worker
MAX_EXPONENT = 10_000  # largest literal exponent sympy may evaluate
MAX_RESULT_DIGITS = 1_000_000  # rough bound on the digits of any integer sympy may build while parsing
MAX_FACTORIAL = 10_000  # 10000! has 35660 digits: milliseconds
SYMPY_TIME_LIMIT_S = 2.0  # soft limit per request, inside the worker: it answers `timeout` and lives on
HARD_TIME_LIMIT_S = 4.0  # wall-clock limit per request, enforced by the parent: the worker is killed
WORKER_START_TIMEOUT_S = 30.0  # a worker's start (sympy import, parser warm-up) takes about a second
WORKER_MEMORY_BYTES = 2 << 30  # RLIMIT_AS of a worker
WORKER_CPU_BACKSTOP_S = 30  # RLIMIT_CPU margin per request: kills a worker orphaned in C big-integer work
MAX_WORKERS = 4  # workers run in parallel for that many threads; more threads wait for a free one
REL_TOL = 1e-9


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str  # one of REASONS
    extracted: str | None = None


class _Refused(Exception):
    """An input refused before sympy: `reason` is `timeout` (too costly) or `parse_error` (malformed)."""

    def __init__(self, reason: str, why: str):
        super().__init__(why)
        self.reason = reason


class _NeedSympy(Exception):
    """Raised by the in-process comparison when only sympy (in a worker) can decide."""


# ----------------------------------------------------------------------------------------------------------
# Extraction


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_MARKER_RE = re.compile(r"final\s+answer\s+is|the\s+answer\s+is|answer\s*:|^####", re.IGNORECASE | re.MULTILINE)
_EMPTY_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{[\s~$]*\}")
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)")
# What may stand between two boxes that form one answer: `$\boxed{2}$ and $\boxed{3}$`, `\boxed{2}, \boxed{3}`.
_BOX_JOIN_RE = re.compile(r"[\s$,;]*(?:(and|or|\\text\{\s*(?:and|or)\s*\})[\s$,;]*)?", re.IGNORECASE)


def _brace_pairs(text: str) -> dict[int, int]:
    """Index of every unescaped `{` -> index of its matching `}` (unmatched ones are absent). O(n)."""
    pairs, stack, i, n = {}, [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2  # `\{` and `\}` are literal braces, not grouping
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _is_blank(content: str) -> bool:
    """True for box contents that say nothing: `{}`, `{ }`, `{\\,}`, `{\\text{}}`."""
    return not re.sub(r"\\(?:text|mathrm|mbox|textbf|mathbf|quad|qquad)(?![A-Za-z])|\\[,;:! ]|[\s{}$~]", "", content)


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every brace-matched `\\boxed{...}`/`\\fbox{...}` (also `\\boxed 5`)."""
    pairs = _brace_pairs(text)
    out = []
    for m in _BOX_RE.finditer(text):
        j = m.end()
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            if j in pairs:
                out.append((m.start(), pairs[j] + 1, text[j + 1 : pairs[j]]))
        elif j > m.end():  # `\boxed 5`: one token
            tok = re.match(r"[^\s$]+", text[j:])
            if tok:
                out.append((m.start(), j + tok.end(), tok.group(0)))
    return out


def _last_box_answer(text: str) -> str | None:
    """The last non-empty box, joined with the boxes written right before it (`, `/`and`: a list,
    `or`: a hedge that never scores). Identical repeated boxes count once."""
    boxes = [b for b in _boxes(text) if not _is_blank(b[2])]
    if not boxes:
        return None
    group, hedged = [boxes[-1]], False
    for prev in reversed(boxes[:-1]):
        if prev[1] > group[0][0]:
            break  # `\\boxed{\\boxed{5}}`: the outer box holds the inner one
        m = _BOX_JOIN_RE.fullmatch(text[prev[1] : group[0][0]])
        if not m:
            break
        hedged = hedged or bool(m.group(1) and "or" in m.group(1).lower())
        group.insert(0, prev)
    contents = [c.strip() for _, _, c in group]
    if len(set(contents)) == 1:
        return contents[0]
    return (" \\text{ or } " if hedged else ", ").join(contents)


def _clean_marker_answer(x: str) -> str:
    x = x.split("\n", 1)[0]
    x = _EMPTY_BOX_RE.sub("", x)
    end = _SENTENCE_END_RE.search(x)
    if end:
        x = x[: end.start()]
    x = x.strip(" \t\r.:*$")
    x = re.sub(r"^\\[(\[]|\\[)\]]$", "", x).strip(" \t.*$")
    return x


def extract_answer(response: str) -> str | None:
    """The final answer in `response`, or None. Rules in the module docstring."""
    if not isinstance(response, str) or not response:
        return None
    if "</think>" in response:
        text = response.rsplit("</think>", 1)[-1]
    elif "<think>" in response:
        return None  # the model was cut off while thinking: whatever it boxed there is not its answer
    else:
        text = response
    boxed = _last_box_answer(text)
    if boxed is not None:
        return boxed
    for m in reversed(list(_MARKER_RE.finditer(text))):
        x = _clean_marker_answer(text[m.end() :])
        if x and not _is_blank(x):
            return x
    return None


# ----------------------------------------------------------------------------------------------------------
# Normalisation (plain string work, no sympy)


_TEXT_CMD_RE = re.compile(
    r"\\(?:text|mbox|mathrm|textbf|mathbf|textit|mathit|textrm|textnormal|boldsymbol|textsf|mathsf)\s*\{"
)
_HEDGE_RE = re.compile(r"\bor\b|\\lor(?![A-Za-z])|\\vee(?![A-Za-z])", re.IGNORECASE)
_UNICODE = {"\u2212": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u2264": "\\le ", "\u2265": "\\ge ",
            "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u00b0": "^\\circ", "\u221a": "\\sqrt", "\u2205": "\\emptyset"}
_ROW = "\ue000"  # stands for `\\` (a matrix row break) while single-backslash commands are rewritten


def _text_groups(s: str) -> list[tuple[int, int, int]]:
    """(start, content_start, end) of each top-level `\\text{...}`-like group, end exclusive."""
    pairs = _brace_pairs(s)
    groups = []
    for m in _TEXT_CMD_RE.finditer(s):
        brace = m.end() - 1
        if brace in pairs and not any(a <= m.start() < b for a, _, b in groups):
            groups.append((m.start(), brace + 1, pairs[brace] + 1))
    return groups


def _strip_text(s: str) -> str:
    """Drop trailing units in `\\text{}` (`5 \\text{ cm}`, `5\\,\\mathrm{cm}^2`) and a leading phrase that ends in
    "is" or "=" (`\\text{The area is } 6`); unwrap the other `\\text{X}` to X."""
    for _ in range(4):
        groups = _text_groups(s)
        if not groups:
            break
        start, _, end = groups[-1]
        if re.fullmatch(r"\s*(?:\^\s*\{?\s*[23]\s*\}?)?\s*", s[end:]) and s[:start].strip():
            s = s[:start].rstrip()
        else:
            break
    groups = _text_groups(s)
    if groups and groups[0][0] == 0 and s[groups[0][2] :].strip():
        lead = s[groups[0][1] : groups[0][2] - 1]
        if re.search(r"(?:\bis|\bare|\bequals|=|:)\s*$", lead):
            s = s[groups[0][2] :]  # `\text{The probability is } \frac{3}{4}` -> the math after the prose
    out, last = [], 0
    for start, content, end in _text_groups(s):
        out.append(s[last:start])
        out.append(s[content : end - 1])
        last = end
    out.append(s[last:])
    return "".join(out)


def _strip_outer(s: str, open_: str, close: str) -> str | None:
    """Contents if `s` is exactly one `open_ ... close` group, else None."""
    if not (s.startswith(open_) and s.endswith(close)) or len(s) < len(open_) + len(close):
        return None
    inner = s[len(open_) : len(s) - len(close)]
    depth = 0
    for c in inner:  # the group must not close early, as in `{1}+{2}`
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth -= 1
            if depth < 0:
                return None
    return inner if depth == 0 else None


def _strip_braces(s: str) -> str:
    """`{{27}}` -> `27`, in one pass (nesting may be thousands deep)."""
    if not s.startswith("{"):
        return s
    pairs, i, j = _brace_pairs(s), 0, len(s) - 1
    while i < j and s[i] == "{" and pairs.get(i) == j:
        i, j = i + 1, j - 1
    return s[i : j + 1].strip()


def _normalize(s: str) -> str:
    """LaTeX cosmetics removed; the answer's meaning kept (a trailing `%` marks a percentage)."""
    s = "".join(_UNICODE.get(c, c) for c in s.strip()).replace("\\\\", _ROW)
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\[()\[\]]", "", s)
    s = re.sub(r"\\(?:displaystyle|textstyle|left|right|[bB]ig(?:g|l|r)?|Bigg|hline)(?![A-Za-z])", "", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)  # \frac13
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)  # \frac1{3}
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\d)", r"\\frac\1{\2}", s)  # \frac{1}3
    s = re.sub(r"\\sqrt\s*(\d+)", r"\\sqrt{\1}", s)  # \sqrt2
    s = s.replace("{,}", ",").replace("\\!", "")
    s = re.sub(r"\\[,;: ]|\\q?quad(?![A-Za-z])|~", " ", s)
    s = re.sub(r"\s*(?:\\%|%|\\percent(?![A-Za-z])|\s+percent\b)", "%", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])", "", s)
    s = re.sub(r"\\leq?(?:slant)?(?![A-Za-z])", r"\\le ", s)
    s = re.sub(r"\\geq?(?:slant)?(?![A-Za-z])", r"\\ge ", s)
    s = re.sub(r"\\lt(?![A-Za-z])", "<", s)
    s = re.sub(r"\\gt(?![A-Za-z])", ">", s)
    s = _strip_text(s)
    s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip()
    s = _strip_braces(s)
    s = re.sub(r"^[A-Za-z]\s*\\in(?![A-Za-z])\s*", "", s)  # x \in [1, 2) -> [1, 2)
    s = re.sub(r"^\((?:\s*[A-Za-z]\s*,)+\s*[A-Za-z]\s*\)\s*=\s*(?=\()", "", s)  # (x, y) = (1, 2) -> (1, 2)
    s = re.sub(r"\\varnothing(?![A-Za-z])|^\\\{\s*\\\}$", r"\\emptyset", s)
    s = re.sub(r"\+\s*\\infty", r"\\infty", s)
    m = re.fullmatch(r"\(\s*([A-Za-z])\s*\)", s)  # multiple choice `(B)` -> `B`
    if m:
        s = m.group(1)
    return s.replace(_ROW, "\\\\")


_ASSIGN_RE = re.compile(r"\s*([A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?|\\[A-Za-z]+)\s*=\s*([^=<>]+)")


def _assignment(s: str) -> tuple[str, str] | None:
    m = _ASSIGN_RE.fullmatch(s)
    return (m.group(1), m.group(2).strip()) if m else None


def _drop_assignments(a: str, b: str) -> tuple[str, str]:
    """`x = 3` compares as `3` when one side assigns a single variable (or both assign the same one)."""
    aa, ab = _assignment(a), _assignment(b)
    if aa and ab:
        return (aa[1], ab[1]) if aa[0] == ab[0] else (a, b)
    if aa and "=" not in b:
        return aa[1], b
    if ab and "=" not in a:
        return a, ab[1]
    return a, b


def _last_of_numeric_chain(s: str) -> str:
    """`12 + 15 = 27` (no letters) -> `27`: the model's own arithmetic ends in its answer."""
    if "=" in s and not re.search(r"[A-Za-z<>]", s.replace("\\frac", "").replace("\\cdot", "").replace("\\times", "")):
        return s.rsplit("=", 1)[-1].strip()
    return s


_NOT_UNITS = {"and", "or", "pi", "plus", "minus", "times", "over", "sqrt", "frac", "cdot"}


def _strip_unit_words(s: str) -> str:
    """`27 apples`, `5 cm^2`, `60 km/h` -> the number: small models write units as plain words."""
    m = re.fullmatch(r"(.*?[\d}])\s*((?:[A-Za-z]{2,}\s*){1,3}|[A-Za-z]+/[A-Za-z]+)\s*(?:\^\s*\{?[23]\}?)?", s)
    if m and parse_number(m.group(1)) is not None and not set(m.group(2).lower().split()) & _NOT_UNITS:
        return m.group(1).strip()
    return s


# ----------------------------------------------------------------------------------------------------------
# Exact path: plain numbers as fractions.Fraction


_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
_FRAC_PATTERNS = [
    re.compile(rf"({_NUM})/({_NUM})"),
    re.compile(rf"\\frac\{{(-?{_NUM})\}}\{{(-?{_NUM})\}}"),
]
_REPEATING_RE = re.compile(r"(\d*)\.(\d*)\\overline\{(\d{1,20})\}")
_SCI_RE = re.compile(rf"({_NUM})(?:[eE]|(?:\\times|\\cdot|\*)10\^)\{{?([+-]?\d{{1,3}})\}}?")
_MIXED_SLASH_RE = re.compile(r"(\d+) (\d+)/(\d+)")
_MIXED_FRAC_RE = re.compile(r"(\d+)\\frac\{(\d+)\}\{(\d+)\}")


def parse_number(s: str) -> Fraction | None:
    """An exact Fraction if `s` (already normalised) is a plain number, else None. Never uses floats."""
    s = s.strip()
    if not s or len(s) > 100:
        return None
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:].strip()
    m = _MIXED_SLASH_RE.fullmatch(s)
    s = s.replace(" ", "")  # spaces in math mode are not significant: `1\,000` -> `1 000` -> 1000
    m = m or _MIXED_FRAC_RE.fullmatch(s)
    if m:
        whole, num, den = (int(g) for g in m.groups())
        return sign * (whole + Fraction(num, den)) if 0 < num < den else None
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    if re.fullmatch(_NUM, s):
        return sign * Fraction(s)
    m = _SCI_RE.fullmatch(s)
    if m:
        return sign * Fraction(m.group(1)) * Fraction(10) ** int(m.group(2))
    m = _REPEATING_RE.fullmatch(s)
    if m:  # 3.1\overline{6} = 3.1 + 6/(10 * 9)
        whole, fixed, repeat = m.groups()
        value = Fraction(int(whole or 0)) + Fraction(int(fixed or 0), 10 ** len(fixed))
        return sign * (value + Fraction(int(repeat), 10 ** len(fixed) * (10 ** len(repeat) - 1)))
    for pattern in _FRAC_PATTERNS:
        m = pattern.fullmatch(s)
        if m:
            den = Fraction(m.group(2))
            return sign * Fraction(m.group(1)) / den if den else None
    return None


_BASE_RE = re.compile(r"([0-9A-Za-z]+)_\{?\(?(\d{1,2})\)?\}?")


def _base_number(s: str) -> tuple[str, int] | None:
    """(digits, base) for `1011_2`, `1011_{2}`, `A3_{16}`; None for anything else (e.g. `x_1`)."""
    m = _BASE_RE.fullmatch(s.replace(" ", ""))
    if not m:
        return None
    digits, base = m.group(1), int(m.group(2))
    if not 2 <= base <= 36 or not (digits[0].isdigit() or digits.isupper()):
        return None
    try:
        int(digits, base)
    except ValueError:
        return None
    return digits.upper().lstrip("0") or "0", base


# ----------------------------------------------------------------------------------------------------------
# Guards: refuse what would make sympy build astronomically large integers (it evaluates while parsing)


def _operand_after(s: str, i: int, pairs: dict[int, int]) -> str:
    """The operand of `^` at s[i-1]: a braced group, a `\\command`, or one character."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        raise _Refused("parse_error", "dangling ^")
    if s[i] == "{":
        if i not in pairs:
            raise _Refused("parse_error", "unbalanced braces")
        return s[i + 1 : pairs[i]]
    if s[i] == "\\":
        m = re.match(r"\\[A-Za-z]+", s[i:])
        return m.group(0) if m else s[i : i + 2]
    return s[i]


def _group_before(s: str, i: int) -> tuple[int, str] | None:
    """(start, content) of the `(...)`/`{...}`/`[...]` group that closes at s[i]."""
    close = s[i]
    open_ = {")": "(", "}": "{", "]": "["}[close]
    depth = 0
    for j in range(i, -1, -1):
        if s[j] == close:
            depth += 1
        elif s[j] == open_:
            depth -= 1
            if depth == 0:
                return j, s[j + 1 : i]
    return None


def _factorial_digits(s: str) -> int:
    """Digits of the largest n! in `s` (about n*log10(n)); refuses huge or computed factorials."""
    digits = 1
    for m in re.finditer(r"!", s):
        j = m.start() - 1
        while j >= 0 and s[j] == " ":
            j -= 1
        if j < 0:
            continue
        n = None
        if s[j].isdigit():
            k = j
            while k >= 0 and s[k].isdigit():
                k -= 1
            n = int(s[k + 1 : j + 1])
        elif s[j] in ")}]":
            group = _group_before(s, j)
            if group is None:
                raise _Refused("parse_error", "unbalanced group before !")
            start, content = group
            if re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", content)):
                continue  # symbolic: not evaluated
            value = parse_number(content.strip())
            if value is None or s[:start].rstrip().endswith(("^", "_")):
                raise _Refused("timeout", "factorial of an expression")
            n = int(abs(value))
        if n is not None:
            if n > MAX_FACTORIAL:
                raise _Refused("timeout", "huge factorial")
            digits = max(digits, int(n * math.log10(max(n, 2))) + 1)
    return digits


def _check_powers(s: str, atom_digits: int) -> None:
    """Refuse towers and powers whose result would exceed MAX_RESULT_DIGITS digits."""
    pairs = _brace_pairs(s)
    product = 1
    for m in re.finditer(r"\^", s):
        exponent = _operand_after(s, m.end(), pairs)
        if re.search(r"[A-Za-z]", re.sub(r"\\(?:frac|cdot|times)(?![A-Za-z])", "", exponent)):
            continue  # symbolic exponents are not evaluated
        if "^" in exponent or "!" in exponent:
            raise _Refused("timeout", "exponent tower")
        value = parse_number(exponent.replace("{", "").replace("}", "")) if exponent.strip() else None
        if value is None:  # e.g. `3+4`: bound it by the product of its literals
            bound = 1
            for lit in re.findall(r"\d+", exponent):
                bound *= max(2, int(lit)) if len(lit) < 8 else 10**8
        else:
            bound = abs(value)
        if bound > MAX_EXPONENT:
            raise _Refused("timeout", "huge power")
        product *= max(1, int(bound))
        if product * atom_digits > MAX_RESULT_DIGITS:
            raise _Refused("timeout", "huge power")


def _guard(s: str) -> None:
    """Raise _Refused when `s` could make sympy hang: long, towers, huge powers/factorials/binomials."""
    if len(s) > MAX_SYMPY_CHARS:
        raise _Refused("timeout", "too long")
    if re.search(r"\\(?:sum|prod|int|iint|iiint|oint|lim|Gamma)(?![A-Za-z])", s):
        raise _Refused("timeout", "sums, products, integrals or limits")
    if re.search(r"\\(?:binom|dbinom|tbinom|choose)(?![A-Za-z])", s) and (
        "^" in s or "!" in s or any(len(lit) > 4 for lit in re.findall(r"\d+", s))
    ):
        raise _Refused("timeout", "large binomials")
    if "!!" in s.replace(" ", ""):
        raise _Refused("timeout", "iterated factorial")
    literal_digits = max((len(lit) for lit in re.findall(r"\d+", s)), default=1)
    _check_powers(s, max(literal_digits, _factorial_digits(s)))


# ----------------------------------------------------------------------------------------------------------
# Structure: tuples, intervals, sets, lists, unions, matrices, chains, \pm


_BRACKETS = [("\\{", "\\}"), ("(", ")"), ("[", "]"), ("(", "]"), ("[", ")")]
_ORDERED = {"()", "[]", "(]", "[)", "matrix"}
_MATRIX_RE = re.compile(r"\\begin\{(pmatrix|bmatrix|Bmatrix|matrix|smallmatrix|array)\}(.*)\\end\{\1\}", re.DOTALL)
_REL_RE = re.compile(r"\\le |\\ge |\\le(?![A-Za-z])|\\ge(?![A-Za-z])|<|>")


def _split_top(s: str, sep: str = ",") -> list[str]:
    """`s` split at each top-level `sep` (outside brackets and braces)."""
    parts, depth, last, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c == "\\" and not s.startswith(sep, i):
            i += 2
            continue
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[last:i].strip())
            last = i + len(sep)
            i = last
            continue
        i += 1
    parts.append(s[last:].strip())
    return parts


def _matrix(s: str) -> list[list[str]] | None:
    """Rows of cells of a pmatrix/bmatrix/array (also inside `(...)`), or None."""
    for open_, close in (("(", ")"), ("[", "]")):
        inner = _strip_outer(s, open_, close)
        if inner is not None and inner.strip().startswith("\\begin"):
            s = inner.strip()
    m = _MATRIX_RE.fullmatch(s)
    if not m:
        return None
    body = m.group(2)
    if m.group(1) == "array":
        body = re.sub(r"^\s*\{[^{}]*\}", "", body)  # the column spec `{cc}`
    rows = [r for r in re.split(r"\\\\(?:\s*\[[^\]]*\])?", body) if r.strip()]
    cells = [[c.strip() for c in r.split("&")] for r in rows]
    if not cells or len({len(r) for r in cells}) != 1:
        return None
    return cells


def _expand_pm(s: str) -> list[str]:
    """`2 \\pm \\sqrt{3}` -> [`2 + \\sqrt{3}`, `2 - \\sqrt{3}`]; every sign choice for up to three signs."""
    pieces = re.split(r"\\(?:pm|mp)(?![A-Za-z])", s)
    if len(pieces) == 1 or len(pieces) > 4:
        return [s]
    variants = [pieces[0]]
    for piece in pieces[1:]:
        variants = [v + sign + piece for v in variants for sign in (" + ", " - ")]
    return [v.strip() for v in variants]


def _chain(s: str) -> list[str] | None:
    """`1 < x \\le 3` -> [`1 < x`, `x \\le 3`]; None unless `s` has exactly two top-level relations."""
    ops = list(_REL_RE.finditer(s))
    if len(ops) != 2 or len(_split_top(s)) > 1:
        return None
    middle = s[ops[0].end() : ops[1].start()].strip()
    return [s[: ops[1].start()].strip(), middle + " " + s[ops[1].start() :].strip()]


def _as_sequence(s: str) -> tuple[str, list] | None:
    """(kind, elements) for tuples, intervals, sets, lists, unions, matrices, chains; None for one value."""
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        return None  # 1,000 is a number
    cells = _matrix(s)
    if cells is not None:
        return "matrix", cells
    union = _split_top(s, "\\cup")
    if len(union) > 1:
        return "union", union
    for open_, close in _BRACKETS:
        inner = _strip_outer(s, open_, close)
        if inner is not None:
            parts = _split_top(inner)
            if len(parts) > 1 or open_ == "\\{":
                if open_ == "\\{":
                    parts = [x for p in parts for x in _expand_pm(p)]
                return open_ + close, parts
    chain = _chain(s)
    if chain is not None:
        return "chain", chain
    parts = _split_top(s)
    if len(parts) == 1:
        words = _split_top(s, " and ")  # `2 and 3`; but `rock and roll` is one text answer
        if len(words) > 1 and all(re.search(r"\d", w) for w in words):
            parts = words
    parts = [x for p in parts for x in _expand_pm(p)]
    return ("list", parts) if len(parts) > 1 else None


def _compatible(ka: str, kb: str) -> str | None:
    """'ordered' / 'unordered' for kinds that may be compared, None for a kind mismatch."""
    if ka == kb:
        return "ordered" if ka in _ORDERED else "unordered"
    if {ka, kb} == {"list", "\\{\\}"}:
        return "unordered"  # `1, 2` lists all solutions: a set
    if {ka, kb} == {"list", "()"}:
        return "ordered"  # a bare `1, 2` for the point `(1, 2)`
    return None


def _compare(a: str, b: str, full: bool, depth: int = 0) -> str:
    """'correct' / 'mismatch' / 'parse_error' for normalised answer `a` against gold `b`.
    Without `full` (the parent process) it raises _NeedSympy where only sympy can decide."""
    sa, sb = _as_sequence(a), _as_sequence(b)
    if sa is None and sb is None:
        return _compare_scalar(a, b, full)
    if sa is None or sb is None or depth > 3:
        return "mismatch"
    (ka, pa), (kb, pb) = sa, sb
    order = _compatible(ka, kb)
    if order is None or len(pa) != len(pb) or len(pa) > MAX_PARTS:
        return "mismatch"
    if ka == "matrix":
        if any(len(x) != len(y) for x, y in zip(pa, pb)) or len(pa) * len(pa[0]) > MAX_PARTS:
            return "mismatch"
        pa, pb = [c for row in pa for c in row], [c for row in pb for c in row]
    if order == "unordered":
        unused = list(pb)
        for x in pa:
            hit = next((y for y in unused if _compare(x, y, full, depth + 1) == "correct"), None)
            if hit is None:
                return "mismatch"
            unused.remove(hit)
        return "correct"
    for x, y in zip(pa, pb):
        result = _compare(x, y, full, depth + 1)
        if result != "correct":
            return result
    return "correct"


# ----------------------------------------------------------------------------------------------------------
# Scalars


_WORD_RE = re.compile(r"[A-Za-z]{2,}(?:[\s-]+[A-Za-z]+)*")
_PROSE_RE = re.compile(r"[A-Za-z]{5,}")


def _percent_readings(v: str) -> list[str]:
    """What `v%` may mean on the other side: `v` itself or `v/100`."""
    number = parse_number(v)
    return [v, str(number / 100) if number is not None else f"\\frac{{{v}}}{{100}}"]


def _compare_scalar(a: str, b: str, full: bool) -> str:
    if max(len(a), len(b)) > MAX_SCALAR_CHARS and a != b:
        raise _Refused("timeout", "too long")  # also keeps the regexes below linear in practice
    a, b = _drop_assignments(a, b)
    a, b = _last_of_numeric_chain(a), _last_of_numeric_chain(b)
    a, b = _strip_unit_words(a), _strip_unit_words(b)
    pct_a, pct_b = a.endswith("%"), b.endswith("%")
    a, b = a.rstrip("%").strip(), b.rstrip("%").strip()
    if pct_a == pct_b:
        return _compare_value(a, b, full)
    first = None
    for reading in _percent_readings(a if pct_a else b):
        result = _compare_value(reading, b, full) if pct_a else _compare_value(a, reading, full)
        if result == "correct":
            return result
        first = first or result
    return first


def _compare_value(a: str, b: str, full: bool) -> str:
    if a.replace(" ", "") == b.replace(" ", ""):
        return "correct"
    if not a or not b:
        return "mismatch"
    ba, bb = _base_number(a), _base_number(b)
    if ba or bb:  # digit strings in one base; a decimal value is not a base-2 answer
        plain_a = ba or (a.upper().lstrip("0") or "0", bb[1])
        plain_b = bb or (b.upper().lstrip("0") or "0", ba[1])
        return "correct" if plain_a == plain_b else "mismatch"
    na, nb = parse_number(a), parse_number(b)
    if na is not None and nb is not None:
        return "correct" if na == nb else "mismatch"
    a, b = (a if na is None else str(na)), (b if nb is None else str(nb))  # `1,000` and `4 4/9` for sympy
    if re.fullmatch(r"[A-E]", b):  # multiple choice: `(C) 12`, `C. 12`, `C) 12` answer `C`; not `C + 1`
        m = re.fullmatch(r"\(([A-E])\)(?:\s.*)?|([A-E])[.:)](?:\s.*)?", a)
        return "correct" if m and (m.group(1) or m.group(2)) == b else "mismatch"
    if _WORD_RE.fullmatch(a) or _WORD_RE.fullmatch(b):  # text answers: never products of symbols
        return "correct" if _words(a) == _words(b) else "mismatch"
    if _PROSE_RE.search(re.sub(r"\\[A-Za-z]+", " ", a)):
        return "mismatch"  # prose, not an expression (and slow for the lark parser)
    _guard(a)
    _guard(b)
    if not full:
        raise _NeedSympy()
    return _sympy_compare(a, b)


def _words(s: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).split()


# ----------------------------------------------------------------------------------------------------------
# Sympy (imported and run only inside a worker process)


class _Timeout(BaseException):  # BaseException: sympy's own `except Exception` must not swallow it
    pass


def _sqrt_calls(s: str) -> str:
    """Plain-text `sqrt(x)` -> `\\sqrt{x}` (the lark grammar reads `sqrt(2)` as s*q*r*t*2)."""
    while True:
        m = re.search(r"(?<![\\A-Za-z])sqrt\s*\(", s)
        if not m:
            return s
        depth, j = 1, m.end()
        while j < len(s) and depth:
            depth += {"(": 1, ")": -1}.get(s[j], 0)
            j += 1
        if depth:
            raise _Refused("parse_error", "unbalanced sqrt(")
        s = s[: m.start()] + "\\sqrt{" + s[m.end() : j - 1] + "}" + s[j:]


def _explicit_products(s: str) -> str:
    """Insert `\\cdot` before `(` after a letter, `)` or `}`: `x(x+1)` is otherwise ambiguous to lark
    (it may be a function call) and nested `a(b(c(...)))` makes its Earley parser exponential."""
    out, i = [], 0
    for m in re.finditer(r"\\[A-Za-z]+|[A-Za-z)}]\s*\(", s):
        if m.group(0).startswith("\\"):
            continue
        out.append(s[i : m.start() + 1])
        out.append(" \\cdot ")
        i = m.start() + 1
    out.append(s[i:])
    return "".join(out)


_GROUP_CMD_RE = re.compile(r"\\(sqrt|mathit|frac)(?![A-Za-z])")
_OPERATOR_CMDS = r"cdot|times|div|pm|mp|le|ge|leq|geq|lt|gt|ne|neq|cup|cap|setminus|to|right|end|circ"
_OPERAND_START_RE = re.compile(rf"[A-Za-z0-9(]|\\(?!(?:{_OPERATOR_CMDS})(?![A-Za-z]))[A-Za-z]")


def _products_after_groups(s: str) -> str:
    """`\\sqrt{2}x`, `\\sqrt{2}\\pi`, `\\pi r^2` -> explicit `\\cdot`: lark rejects these juxtapositions."""
    pairs = _brace_pairs(s)
    inserts = []
    for m in _GROUP_CMD_RE.finditer(s):
        j = m.end()
        if m.group(1) == "sqrt" and s.startswith("[", j):
            j = s.find("]", j) + 1  # past the `[3]` of `\sqrt[3]{x}`
        for _ in range(2 if m.group(1) == "frac" else 1):
            while s.startswith(" ", j):
                j += 1
            if j not in pairs:
                break
            j = pairs[j] + 1
        else:
            k = j
            while s.startswith(" ", k):
                k += 1
            if _OPERAND_START_RE.match(s, k):
                inserts.append(j)
    for j in reversed(inserts):
        s = s[:j] + " \\cdot " + s[j:]
    return s


# Before `\mathit{pi}`: after a digit, `}`, `)` or a one-letter variable (not the end of `\sin`).
_BEFORE_PI_RE = re.compile(r"(?:(?<=[0-9})])|(?<=(?<![\\A-Za-z])[A-Za-z]))\s*(?=\\mathit\{pi\})")
_AFTER_PAREN_RE = re.compile(
    r"\)\s*(?=\\(?!(?:cdot|times|div|pm|mp|le|ge|leq|geq|lt|gt|ne|neq|cup|cap|setminus|to|right|end|circ)"
    r"(?![A-Za-z]))[A-Za-z])"
)


# `\sin^2 x` -> `(\sin x)^{2}`: lark reads `\sin^{2}(x) + \cos^{2}(x)` two ways.
_TRIG_POWER_RE = re.compile(
    r"\\(sin|cos|tan|sec|csc|cot|sinh|cosh|tanh)\s*\^\s*\{?(\d)\}?\s*([A-Za-z]|\\[A-Za-z]+|\([^()]*\))"
)


def _to_latex_for_sympy(s: str) -> str:
    s = s.replace("**", "^")
    s = _TRIG_POWER_RE.sub(r"(\\\1 \3)^{\2}", s)
    s = _sqrt_calls(s)
    s = re.sub(r"\\pi(?![A-Za-z])", r"\\mathit{pi}", s)
    s = re.sub(r"(?<![A-Za-z\d.])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?![A-Za-z\d])", r"\1 \\times 10^{\2}", s)

    def exact_decimal(m: re.Match) -> str:
        whole, frac = m.group(1), m.group(2)
        return f"(\\frac{{{int(whole + frac)}}}{{1{'0' * len(frac)}}})"  # parenthesised: `4.5\pi` is a product

    s = re.sub(r"(?<![\d.])(\d*)\.(\d+)", exact_decimal, s)  # exact, not sympy Float
    s = _explicit_products(s)
    s = _AFTER_PAREN_RE.sub(r") \\cdot ", s)  # lark rejects `(2)\pi`, `(2)\sqrt{3}`
    s = _BEFORE_PI_RE.sub(r" \\cdot ", s)  # and `r^2\pi`
    return _products_after_groups(s)


def _to_sympy(s: str):
    _guard(s)
    latex = _to_latex_for_sympy(s)
    _guard(latex)
    return _parse(latex)


@functools.lru_cache(maxsize=4096)
def _parse(latex: str):
    """sympy expression for `latex`. Cached: lark's Earley parser takes 20-40 ms on a short answer,
    and during training every sample of a question repeats its gold (and many repeat an answer)."""
    import sympy
    from sympy.parsing.latex import parse_latex

    expr = parse_latex(latex, backend="lark")
    if not isinstance(expr, sympy.Basic):  # lark returns a Tree for ambiguous input
        readings = set(getattr(expr, "children", []))
        if len(readings) != 1 or not isinstance(next(iter(readings)), sympy.Basic):
            raise TypeError("ambiguous parse")
        expr = readings.pop()  # `2\pi \cdot r^2`: every reading is the same expression
    constants = {"pi": sympy.pi, "e": sympy.E, "i": sympy.I}
    subs = {sym: constants[sym.name] for sym in expr.free_symbols if getattr(sym, "name", None) in constants}
    return expr.xreplace(subs) if subs else expr


def _numeric_value(expr, subs=None):
    """A sympy Float/complex at 30 digits (arbitrary exponent range: 1/2004! does not underflow)."""
    import sympy

    try:
        value = expr.evalf(30, subs=subs)
    except Exception:  # noqa: BLE001 -- any failure to evaluate means "no numeric value"
        return None
    if not value.is_number or value.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        return None
    return value


def _close(x, y) -> bool:
    # |x - y| <= tol * max(|x|, |y|), evaluated in sympy/mpmath floats, never Python floats.
    return bool(abs(x - y) <= REL_TOL * max(abs(x), abs(y)))


def _expr_equal(a, b) -> bool:
    import sympy

    if isinstance(a, sympy.Rel) or isinstance(b, sympy.Rel):
        return _relation_equal(a, b)
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return a == b
    if a == b:
        return True
    if a.is_Rational and b.is_Rational:
        return False  # exact and different: 1/2004! is not 1/2006!, however close in floating point
    diff = a - b
    if diff == 0 or sympy.simplify(diff) == 0:
        return True
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        va, vb = _numeric_value(a), _numeric_value(b)
        return va is not None and vb is not None and _close(va, vb)
    for point in (0.5377, 1.8339, -2.2588):  # numeric check at a few arbitrary points
        subs = {sym: sympy.Rational(str(point)) + sympy.Rational(31, 100) * k for k, sym in enumerate(symbols)}
        va, vb = _numeric_value(a, subs), _numeric_value(b, subs)
        if va is None or vb is None or not _close(va, vb):
            return False
    return True


def _constant_ratio(da, db, positive: bool) -> bool:
    """True if da == c * db for a number c != 0 (c > 0 when `positive`)."""
    import sympy

    if db == 0:
        return da == 0
    ratio = sympy.simplify(da / db)
    if ratio.free_symbols or not ratio.is_number or ratio.has(sympy.nan, sympy.zoo):
        return False
    return bool(ratio > 0) if positive else bool(ratio != 0)


def _relation_equal(a, b) -> bool:
    """Equations equal up to a non-zero factor; inequalities up to a positive one, `>` flipped to `<`."""
    import sympy

    if not (isinstance(a, sympy.Rel) and isinstance(b, sympy.Rel)):
        return False
    if isinstance(a, (sympy.Gt, sympy.Ge)):
        a = a.reversed
    if isinstance(b, (sympy.Gt, sympy.Ge)):
        b = b.reversed
    if type(a) is not type(b):
        return False
    da, db = a.lhs - a.rhs, b.lhs - b.rhs
    return _constant_ratio(da, db, positive=not isinstance(a, (sympy.Eq, sympy.Ne)))


def _sympy_compare(a: str, b: str) -> str:
    try:
        eb = _to_sympy(b)
        ea = _to_sympy(a)
    except _Refused:
        raise
    except Exception:  # noqa: BLE001 -- the parser raises many types; all mean "cannot read this"
        return "parse_error"
    return "correct" if _expr_equal(ea, eb) else "mismatch"


# ----------------------------------------------------------------------------------------------------------
# The worker process: sympy under a hard limit


def _worker_main() -> None:
    """Body of a worker process: one JSON request per line on stdin, one JSON reply per line out.
    Started by `_Worker` as `python -c "import verify; verify._worker_main()"`."""
    import resource

    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # a library's stray print must not corrupt the protocol
    for limit, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_AS, WORKER_MEMORY_BYTES)):
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):
            pass  # a lower limit already in force, or one this OS does not support
    _compare("x (x+1)", "x^2 + x", full=True)  # import sympy and build the lark parser now, not per request
    parent = os.getppid()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    replies.write(b'{"ready": true}\n')
    replies.flush()
    for line in iter(sys.stdin.buffer.readline, b""):  # EOF: the parent closed the pipe or died
        reason = _serve(line)
        replies.write(json.dumps({"reason": reason}).encode() + b"\n")
        replies.flush()
        if reason == "memory":
            os._exit(1)  # memory may be fragmented or caches half built: let the parent start a new one


def _watch_parent(parent: int) -> None:
    """Exit when the parent is gone (we were re-parented), even while the main thread is busy."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _serve(line: bytes) -> str:
    """One request in the worker: the soft time limit (SIGALRM) and a CPU backstop around `_compare`."""
    import resource

    try:
        request = json.loads(line)
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(used.ru_utime + used.ru_stime) + WORKER_CPU_BACKSTOP_S
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))  # SIGXCPU ends us if orphaned in C work

        def on_alarm(signum, frame):
            raise _Timeout()

        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, float(request["limit"]))
        try:
            return _compare(request["a"], request["b"], full=True)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return "timeout"
    except _Refused as refused:
        return refused.reason
    except MemoryError:
        return "memory"
    except Exception:  # noqa: BLE001 -- one bad request must not end the worker
        return "parse_error"


class _Worker:
    """Parent side of one worker process. Used by one thread at a time (the pool hands it out)."""

    def __init__(self):
        here = os.path.dirname(os.path.abspath(__file__))
        module = os.path.splitext(os.path.basename(__file__))[0]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"import {module}; {module}._worker_main()"],
            cwd=here,  # `python -c` puts the working directory first on sys.path: this module's folder
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, to kill it whole; Ctrl-C goes to us only
        )
        self._buffer = b""
        self.ready = False

    def _read_line(self, deadline: float) -> bytes | None:
        """One line from the worker, None at the deadline; EOFError if the worker died."""
        fd = self.proc.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("worker exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def start(self) -> bool:
        if not self.ready:
            self.ready = self._read_line(time.monotonic() + WORKER_START_TIMEOUT_S) is not None
        return self.ready

    def ask(self, a: str, b: str) -> str | None:
        """The worker's reason for (a, b); None if it missed the hard deadline."""
        request = json.dumps({"a": a, "b": b, "limit": SYMPY_TIME_LIMIT_S}).encode() + b"\n"
        deadline = time.monotonic() + HARD_TIME_LIMIT_S
        self.proc.stdin.write(request)  # small: the pipe buffer takes it without blocking
        self.proc.stdin.flush()
        line = self._read_line(deadline)
        return None if line is None else json.loads(line)["reason"]

    def kill(self) -> None:
        """Kill the worker's process group and reap it: nothing survives a timeout."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class _Pool:
    """At most MAX_WORKERS workers; a thread takes an idle one or starts one, and gives it back."""

    def __init__(self):
        self.cond = threading.Condition()
        self.idle: list[_Worker] = []
        self.live = 0

    def take(self, deadline: float) -> _Worker | None:
        with self.cond:
            while not self.idle and self.live >= MAX_WORKERS:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            if self.idle:
                return self.idle.pop()
            self.live += 1
        try:
            return _Worker()
        except BaseException:
            self.give_back(None)
            raise

    def give_back(self, worker: _Worker | None) -> None:
        """Return a healthy worker to the pool; None means one was lost (killed or never started)."""
        with self.cond:
            if worker is None:
                self.live -= 1
            else:
                self.idle.append(worker)
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            idle, self.idle = self.idle, []
            self.live -= len(idle)
        for worker in idle:
            worker.kill()


_POOL = _Pool()


def _new_pool_after_fork() -> None:
    global _POOL
    _POOL = _Pool()  # a forked child must not share the parent's workers (or a lock held at fork time)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_pool_after_fork)
atexit.register(lambda: _POOL.close())


def _take_live_worker(deadline: float) -> _Worker | None:
    """An idle worker that is still running (one may have died idle, e.g. to the OOM killer), or a new one."""
    pool = _POOL
    while True:
        worker = pool.take(deadline)
        if worker is None or worker.proc.poll() is None:
            return worker
        worker.kill()
        pool.give_back(None)


def _ask_worker(a: str, b: str) -> str:
    """Reason from a worker for normalised (a, b): `timeout` when the hard limit kills it."""
    if len(a) + len(b) > MAX_REQUEST_CHARS:
        return "timeout"  # elements the parent has not looked at yet may be huge
    reason = _ask_once(a, b)
    if reason == "died":  # it died mid-request: maybe our request (memory), maybe a kill that raced us; once more
        reason = _ask_once(a, b)
    return "timeout" if reason == "died" else reason


def _ask_once(a: str, b: str) -> str:
    pool = _POOL
    worker = _take_live_worker(time.monotonic() + HARD_TIME_LIMIT_S + WORKER_START_TIMEOUT_S)
    if worker is None:
        return "timeout"
    reason = None
    try:
        if not worker.start():
            return "timeout"
        reason = worker.ask(a, b)
        return "timeout" if reason in (None, "memory") else reason
    except (EOFError, OSError, ValueError):
        return "died"  # the worker died mid-request: out of memory or CPU, or killed from outside
    finally:
        if reason is None or reason == "memory":
            worker.kill()
            pool.give_back(None)
        else:
            pool.give_back(worker)


def _worker_pids() -> list[int]:
    """Pids of the idle workers (for tests)."""
    with _POOL.cond:
        return [w.proc.pid for w in _POOL.idle]


# ----------------------------------------------------------------------------------------------------------
# Entry point


def _gold_answer(gold) -> str | None:
    if isinstance(gold, (int, Fraction)) and not isinstance(gold, bool):
        return str(gold)
    if isinstance(gold, float) and math.isfinite(gold):
        return repr(gold)
    if not isinstance(gold, str):
        return None
    if "\\boxed" in gold or "\\fbox" in gold:
        return extract_answer(gold)
    return gold


def _is_many(b: str) -> bool:
    """True if gold `b` is several values of which an answer must give all (a list, a set, `\\pm`)."""
    sequence = _as_sequence(b)
    return sequence is not None and sequence[0] in ("list", "\\{\\}")


def check_math(response: str, gold: str) -> Verdict:
    """Verdict on whether `response`'s final answer equals `gold`. Never raises."""
    extracted = None
    try:
        extracted = extract_answer(response)
        if extracted is None:
            return Verdict(False, "no_answer", None)
        gold_answer = _gold_answer(gold)
        if gold_answer is None or not gold_answer.strip():
            return Verdict(False, "parse_error", extracted)
        a, b = _normalize(extracted), _normalize(gold_answer)
        if _HEDGE_RE.search(extracted) and not _HEDGE_RE.search(gold_answer):
            if not _is_many(b):
                return Verdict(False, "mismatch", extracted)
            a = _HEDGE_RE.sub(",", a)  # `x = 1 or x = -1` lists the solutions when gold has several
        if not a:
            return Verdict(False, "no_answer", extracted)
        if not b:
            return Verdict(False, "parse_error", extracted)
        try:
            reason = _compare(a, b, full=False)
        except _NeedSympy:
            reason = _ask_worker(a, b)
        return Verdict(reason == "correct", reason, extracted)
    except _Refused as refused:
        return Verdict(False, refused.reason, extracted)
    except Exception:  # noqa: BLE001 -- the contract: never raise, whatever the input
        return Verdict(False, "parse_error", extracted)


def check_code(response: str, task: dict, **kwargs) -> Verdict:
    """The reward for a code task (design.md's contract): the program in `response` run against `task` in
    the sandbox of sandbox.py, which holds the runner, the isolation and its reasons (sandbox.CODE_REASONS).
    Imported on first use, so math-only runs never load it. Never raises; keyword arguments pass through."""
    from sandbox import check_code as run_in_sandbox

    return run_in_sandbox(response, task, **kwargs)
