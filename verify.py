"""Rewards: the binary verdict r that every other part of SD-Zero trusts.

`check_math(response, gold) -> Verdict` decides whether a model's final answer equals the gold answer.
It never raises, and returns within HARD_TIME_LIMIT_S from any thread. `Verdict.reason` says why:
`correct`; `no_answer` (nothing to extract); `mismatch`; `parse_error` (cannot be read as mathematics);
`timeout` (the budget ran out, or the input was refused because evaluating it would exceed the budget,
e.g. `10^{10^{10}}`, or an answer longer than MAX_ANSWER_CHARS).

What it checks, in order:
  1. Extraction (`_final_answers`): only the last MAX_TAIL_CHARS characters after the last `</think>` (a
     `<think>` opened after it and never closed means no answer), inside the last `<answer>...</answer>`
     if any. The LAST brace-matched non-empty `\\boxed{}`/`\\fbox{}`, with the boxes stated together with it:
     joined by separators (`\\quad \\text{and} \\quad`, commas, `\\( \\)`, `\\[ \\]`; also by short prose when
     the gold has several values) they form one list; joined by an alternative ("or", "maybe", "possibly",
     "alternatively", `(or ...)`) a hedge. Without a box: the last answer marker ("final answer is X",
     "the answer is X", "Answer: X", a `Final Answer` heading, GSM8K's "#### X"), whose sentence gives the
     math after its last copula (`The largest $n$ is 34.` -> 34), else its last number; or a response that
     is nothing but math (`$\\frac13$`, `-5`). There is deliberately no "last number anywhere" fallback: it
     would reward any number that happens to appear in the working.
  2. Hedges never score: every value the response states must equal the gold. A box and a later answer
     marker with another value are two statements (unless the work between them derives the marker's
     value: the box was a step); a box retracted right after it ("but that is wrong") does not count.
     Only a gold with that many values takes the alternatives of a hedge, as one list (`x = 1 \\text{ or }
     x = -1` for gold `\\pm 1`). A list of candidates never scores: a list only matches a list.
  3. Normalisation (`_normalize`, linear string work): delimiters, `\\left/\\right`, spacing, `\\dfrac`/
     `\\cfrac`/`\\frac13`/`\\sqrt2`, `\\$`, units in `\\text{}` or as trailing words, degrees, thousands
     separators in every spelling (`1,000`, `1{,}000`, `14 {, }916`, `11,\\! 111`, `1\\,000`, thin spaces;
     `32, 349` is a pair), ASCII `>=`/`<=`/`!=`, unicode (`\u00bd`, `3\u00bd`, `\u2212`, `\u00b2`), a leading phrase
     (`\\text{The area is } 6`), `x \\in`, `(x, y) =`, `\\emptyset`, multiple-choice letters.
  4. Structure (`_compare`): tuples and intervals compare in order with their brackets (`(1, 2]` is not
     `(1, 2)`); one variable's inequality states an interval (`x \\ge 2` is `[2, \\infty)`); sets and bare
     lists (MATH's "enter all solutions", golds separated by `,`, `;` or "or") in any order, each element
     used once; unions of intervals in any order; `a \\pm b` is {a+b, a-b}; a chain is its two relations.
  5. Scalars (`_compare_scalar`): a label compares by its value (`x = 3`, `AB=4`, `|AB|=1`, `f(x)=1`,
     `V_1:V_2=11:21`, `3 = x`); `12 + 15 = 27` as `27`. Percent: `v%` on one side matches `v` or `v/100` on
     the other (`25` never matches `0.25`). Bases: digit strings in the same base (`1011_2` is `1011_{2}`
     and `1011`, not `11` or `1011_3`). Words compare case- and space-insensitively.
  6. Exact numbers (`parse_number`): integers of up to MAX_SCALAR_CHARS digits, decimals, fractions, mixed
     numbers, repeating decimals, scientific notation, integer powers (`10^{309}`) compare as
     `fractions.Fraction`, in this process without sympy: about 0.1 ms. The decimal policy, one for every
     gold: a decimal matches a value it gives to DECIMAL_REL_TOL (about double precision), rational or not
     (`0.0833333333333333` is 1/12 and `0.7071067811865476` is sqrt(2)/2; `0.333333` and `1.41421356` are not).
  7. Everything else goes to sympy, in a worker: size guards (`_guard`) refuse towers, huge powers,
     factorials, binomials and long inputs; latex2sympy2_extended (math-verify's parser, what TRL, verl and
     open-r1 grade with; ANTLR, a few ms per expression) reads both sides, decimals made exact first; then
     exact rational comparison, `simplify(a - b) == 0`, else numerically at 30 digits (REL_TOL); variables at
     three arbitrary points; matrices element-wise; equations match up to a non-zero factor, inequalities
     a positive one. Parses are cached. The library reads the LaTeX; the policy above (what counts as the
     answer, hedges, exact numbers, guards, the budget) is ours, because no grader we measured holds it
     (bench/verify.py: math-verify scores hedges and `1/2004! = 1/2006!` and has no time bound in-process).

Time: the parent's work is linear in the response (the tail cap, whitespace collapsed first, no pattern
that backtracks over a run); sympy runs only in worker processes (`python -c "import verify; ..."`,
never fork: the trainer has torch threads), started lazily and reused; the parent never imports sympy.
A request has a soft limit in the worker (`SYMPY_TIME_LIMIT_S`, SIGALRM: it answers `timeout` and lives
on); the whole call has a wall-clock limit in the parent (`HARD_TIME_LIMIT_S`, a worker's start
included): past it the worker's process group is killed and reaped (this stops what signals cannot: long
big-integer work in C), and a worker still starting is kept for the next call. A worker has
`WORKER_MEMORY_BYTES` of address space and a CPU backstop, and exits when its parent goes. `MAX_WORKERS` serve.

What it does not do:
  * Decide what the guards refuse: `10^{10^{10}}` against `10^{10000000000}` is `timeout`, not `correct`.
    Sums, products, integrals and limits are refused.
  * Read unmarked prose: `Therefore $x \\ge 5$ is the solution.` (no box, marker or bare answer) is `no_answer`.
  * Convert units (`5 \\text{ km}` equals `5`, and so does `5 \\text{ m}`) or formats other than intervals:
    a column vector does not match a tuple, degrees do not match radians.
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
import unicodedata
from dataclasses import dataclass
from fractions import Fraction

REASONS = ("correct", "no_answer", "mismatch", "parse_error", "timeout")
MAX_SYMPY_CHARS = 400  # longer scalars are refused before sympy (parse and simplify grow fast with length)
MAX_TAIL_CHARS = 100_000  # only the last 100,000 characters after the last </think> are read: answers are at the end
MAX_ANSWER_CHARS = 2_000  # a longer extracted answer (or gold) is refused as `timeout`: no real answer is this long
MAX_SCALAR_CHARS = MAX_ANSWER_CHARS  # exact integers of up to this many digits compare exactly
MAX_POWER_DIGITS = 10_000  # `a^{b}` of integer literals is evaluated exactly in-process up to about this many digits
MAX_PARTS = 20  # tuples, sets, lists and matrices with more elements are not compared
MAX_REQUEST_CHARS = 2 * MAX_PARTS * MAX_SYMPY_CHARS  # the most that is sent to a worker
MAX_EXPONENT = 10_000  # largest literal exponent sympy may evaluate
MAX_RESULT_DIGITS = 1_000_000  # rough bound on the digits of any integer sympy may build while parsing
MAX_FACTORIAL = 10_000  # 10000! has 35660 digits: milliseconds
SYMPY_TIME_LIMIT_S = 2.0  # soft limit per request, inside the worker: it answers `timeout` and lives on
HARD_TIME_LIMIT_S = 4.5  # wall-clock limit of one check_math call, a worker's start included: past it, `timeout`
WORKER_MEMORY_BYTES = 2 << 30  # RLIMIT_AS of a worker
WORKER_CPU_BACKSTOP_S = 30  # RLIMIT_CPU margin per request: kills a worker orphaned in C big-integer work
MAX_WORKERS = 4  # workers run in parallel for that many threads; more threads wait for a free one
REL_TOL = 1e-9  # numeric check of expressions sympy cannot simplify to equal (no decimals on either side)
DECIMAL_REL_TOL = 1e-12  # a decimal matches a value it gives to about double precision (rational or irrational)


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
# Extraction: what the response states as its final answer(s), read from a bounded tail in linear time


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_MARKER_RE = re.compile(r"final\s+answer(?:\s+is\b|[\s*]*:|\**[ \t]*$)|the\s+answer\s+is\b|\banswer\s*:|^####",
                        re.IGNORECASE | re.MULTILINE)
_EMPTY_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{[\s~$]*\}")
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)")
# Between two boxes: separators only make one list answer (`\boxed{2} \quad \text{and} \quad \boxed{3}`);
# an alternative word makes a hedge (`\boxed{2}, or maybe \boxed{3}`, `\boxed{3} (or possibly \boxed{2})`).
_LIST_GAP_RE = re.compile(r"(?:[\s$,;&~]|\\[()\[\],;:! ]|\\\\|\\q?quad(?![A-Za-z])|\band\b|\\text\{\s*(?:(?:and|,|;)\s*)?\})*",
                          re.IGNORECASE)
_HEDGE_GAP_RE = re.compile(r"\b(?:or|maybe|possibly|perhaps|alternatively|otherwise|either|(?:could|might)\s+also)\b"
                           r"|\\lor(?![A-Za-z])|\\vee(?![A-Za-z])", re.IGNORECASE)
_RETRACT_RE = re.compile(r"\b(?:wrong|incorrect|not\s+(?:right|correct|the\s+answer)|a\s+mistake|scratch\s+that)\b",
                         re.IGNORECASE)
_MATH_SEGMENT_RE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_COPULA_RE = re.compile(r"\b(?:is|are|was|equals|be)\b")
_PROSE_WORD_RE = re.compile(r"(?<![\\A-Za-z])(?!(?:and|sqrt|frac|pi|cdot|times)\b)[A-Za-z]{3,}")
_LAST_NUMBER_RE = re.compile(r"-?\d+(?:[.,/]\d+)*")
_SUM_RE = re.compile(r"[\d ]+(?:[-+*\u00d7] ?[\d ()]+)+")  # `12 + 15` alone echoes a question (or is cut off)
_LABEL_RE = re.compile(r"^(?:\**\s*(?:final\s+)?answer\b[\s*:]*)", re.IGNORECASE)
_NEAR = 200  # what lies between two boxes (or after the last) counts as one statement within this many characters


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
    """(start, end, content) of every brace-matched non-blank `\\boxed{...}`/`\\fbox{...}` (also `\\boxed 5`)."""
    pairs = _brace_pairs(text)
    out = []
    for m in _BOX_RE.finditer(text):
        j = m.end()
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            if j in pairs and not _is_blank(text[j + 1 : pairs[j]]):
                out.append((m.start(), pairs[j] + 1, text[j + 1 : pairs[j]]))
        elif j > m.end():  # `\boxed 5`: one token
            tok = re.match(r"[^\s$]+", text[j : j + MAX_ANSWER_CHARS])
            if tok:
                out.append((m.start(), j + tok.end(), tok.group(0)))
    return out


def _gap(text: str) -> str:
    """How two stated values separated by `text` relate: `list`, `hedge`, `prose` (near, neutral) or `far`."""
    if _LIST_GAP_RE.fullmatch(text):
        return "list"
    if len(text) > _NEAR or _RETRACT_RE.search(text):
        return "far"
    return "hedge" if _HEDGE_GAP_RE.search(text) else "prose"


def _group(text: str, spans: list[tuple[int, int, str]], parts: int) -> tuple[list[str], bool]:
    """The last span with the spans stated together with it: joined by separators (a list; also by short prose
    when the gold has `parts` values) or by an alternative word (a hedge). Returns (contents, hedged)."""
    group, hedged = [spans[-1]], False
    for prev in reversed(spans[-MAX_PARTS - 1 : -1]):
        if prev[1] > group[-1][0]:
            break  # `\boxed{\boxed{5}}`: the outer box holds the inner one
        kind = _gap(text[prev[1] : group[-1][0]])
        if kind == "far" or (kind == "prose" and len(group) >= parts):
            break
        hedged = hedged or kind == "hedge"
        group.append(prev)
    contents = list(dict.fromkeys(c.strip() for _, _, c in reversed(group)))  # identical repeats count once
    return contents, hedged and len(contents) > 1


def _sentence_answer(x: str) -> str:
    """What a marker sentence states: `The largest $n$ is $34$` -> `34`, `the sum is 12 apples` -> `12 apples`,
    `The largest n is 34` -> `34`; math after the last copula, else its last number; plain math as it is."""
    masked = _MATH_SEGMENT_RE.sub(lambda m: "\0" * len(m.group(0)), x)
    copulas = list(_COPULA_RE.finditer(masked))
    if copulas and _PROSE_WORD_RE.search(masked[: copulas[-1].start()]):
        x, masked = x[copulas[-1].end() :], masked[copulas[-1].end() :]
    segments = list(_MATH_SEGMENT_RE.finditer(x))
    if segments:
        spans = [(m.start(), m.end(), next(g for g in m.groups() if g is not None)) for m in segments]
        contents, hedged = _group(x, spans, MAX_PARTS)
        return (" \\text{ or } " if hedged else ", ").join(contents)
    if _PROSE_WORD_RE.search(masked) and _LAST_NUMBER_RE.search(x) and not _HEDGE_GAP_RE.search(x):
        return _LAST_NUMBER_RE.findall(x)[-1]
    return x.strip(" \t\r:*").rstrip(".")


def _marker_answers(text: str):
    """(start, answer) after each answer marker, last first (the text up to the next marker, its first statement)."""
    markers = list(_MARKER_RE.finditer(text))
    for k in range(len(markers) - 1, -1, -1):
        stop = markers[k + 1].start() if k + 1 < len(markers) else len(text)
        x = _EMPTY_BOX_RE.sub("", text[markers[k].end() : min(stop, markers[k].end() + MAX_ANSWER_CHARS)])
        x = x.lstrip(" \t\r*:")
        if x.startswith("\n"):  # on the next lines: display math, or anything after a heading (`Final Answer:`)
            x = x.lstrip()
            if markers[k].group(0).rstrip("* \t").lower().endswith("is") and not x.startswith(("$$", "\\[")):
                continue
        display = re.match(r"(\$\$|\\\[)(.*?)(\$\$|\\\])", x, re.DOTALL)
        x = display.group(2) if display else x.split("\n", 1)[0]
        end = _SENTENCE_END_RE.search(x)
        x = _sentence_answer(x[: end.start()] if end and not display else x).strip(" \t\r:*$").rstrip(".")
        if x and not _is_blank(x) and not _BOX_RE.search(x) and not "\\boxed{".startswith(x):  # a box cut off
            yield markers[k].start(), x


def _answer_region(response) -> tuple[str, bool] | None:
    """(text, tagged): the last MAX_TAIL_CHARS characters after the last `</think>`, inside the last closed
    `<answer>` tag if any (tagged: all of it is the answer). None if a `<think>` after it never closes."""
    if not isinstance(response, str) or not response:
        return None
    cut = response.rfind("</think>")
    text = response[cut + len("</think>") :] if cut >= 0 else response
    if "<think>" in text:
        return None
    text = text[-MAX_TAIL_CHARS:]
    close = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, close) if close >= 0 else -1
    return (text[start + len("<answer>") : close], True) if start >= 0 else (text, False)


def _final_answers(response, parts: int = 1) -> list[str] | None:
    """The final answers the response states, one string per statement: usually one. A box and a later,
    different answer marker are two (unless the work between them derives the marker's value: the box was a
    step); alternatives in one statement (`\\boxed{2} or \\boxed{3}`) are joined by ` \\text{ or } `. A box
    retracted after it (`\\boxed{5}, but that is wrong`) does not count. Without box or marker, a response
    that is nothing but math (`$\\frac13$`, `-5`, `Answer \\[ 9 \\]`) is its own answer. `parts` is the
    number of values the gold has (boxes apart by short prose then form one list)."""
    region = _answer_region(response)
    if region is None:
        return None
    text, tagged = region
    boxes = _boxes(text)
    if not boxes:
        marked = next((x for _, x in _marker_answers(text)), None)
        bare = _LABEL_RE.sub("", text.strip(), count=1)
        if marked or len(bare) > MAX_ANSWER_CHARS:  # (refused as too long later; the segment regex is quadratic)
            return [marked or bare] if marked or tagged else None
        masked = _MATH_SEGMENT_RE.sub(" ", bare)
        if tagged or bare and not re.search(r"#|\\boxed|\\fbox", bare) and not _SUM_RE.fullmatch(bare) and \
                not _PROSE_WORD_RE.search(masked.replace("percent", "")):
            return [_sentence_answer(bare)] if bare else None
        return None
    contents, hedged = _group(text, boxes, parts)
    answers = [(" \\text{ or } " if hedged else ", ").join(contents)]
    after = text[boxes[-1][1] :]
    later = next(((i, x) for i, x in _marker_answers(after)
                  if re.search(r"[\d\\$]", x) or re.fullmatch(r"[A-Za-z]{1,12}", x)), None)
    if later and re.search(r"(?<![\w.])" + re.escape(re.sub(r"[\s$]", "", later[1])) + r"(?![\w])",
                           re.sub(r"[\s$]", "", after[: later[0]])):
        return [later[1]]  # the work after the box reached the marked value: the box was an intermediate step
    if _RETRACT_RE.search(after[:_NEAR]):
        return [later[1]] if later else None
    return list(dict.fromkeys(answers + ([later[1]] if later else [])))


def extract_answer(response: str) -> str | None:
    """The final answer in `response` as one string (alternatives of a hedge joined by ` \\text{ or } `), or None."""
    answers = _final_answers(response)
    return None if answers is None else " \\text{ or } ".join(answers)


# ----------------------------------------------------------------------------------------------------------
# Normalisation (plain string work, no sympy)


_TEXT_CMD_RE = re.compile(
    r"\\(?:text|mbox|mathrm|textbf|mathbf|textit|mathit|textrm|textnormal|boldsymbol|textsf|mathsf)\s*\{"
)
_HEDGE_RE = re.compile(r"\bor\b|\\lor(?![A-Za-z])|\\vee(?![A-Za-z])", re.IGNORECASE)
_UNICODE = {"\u2212": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u2264": "\\le ", "\u2265": "\\ge ",
            "\u03c0": "\\pi ", "\u221e": "\\infty ", "\u00b0": "^\\circ", "\u221a": "\\sqrt", "\u2205": "\\emptyset",
            "\u00f7": "\\div ", "\u2260": "\\ne ", "\u2044": "/", "\u00b2": "^2", "\u00b3": "^3", "\u00a0": " ",
            "\u2009": " ", "\u202f": " ", "\u2007": " "}


def _plain(c: str) -> str:
    """One character as LaTeX: `\u2212` -> `-`, and every vulgar fraction `\u00bd` -> ` 1/2` (`3\u00bd` reads `3 1/2`)."""
    if c in _UNICODE:
        return _UNICODE[c]
    parts = unicodedata.decomposition(c).split()
    return " " + "".join(chr(int(h, 16)) for h in parts[1:]).replace("\u2044", "/") if parts[:1] == ["<fraction>"] else c


_GROUP = r"(\{(?:[^{}]|\{[^{}]*\})*\}|[0-9A-Za-z])"  # a braced argument (one level of nesting) or one character
_FRAC_ARGS_RE = re.compile(rf"\\frac(?![A-Za-z]) ?{_GROUP} ?{_GROUP}")  # `\frac13`, `\frac{\sqrt{3}}2`: TeX's reading
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


def _normalize(s: str) -> str:
    """LaTeX cosmetics removed; the answer's meaning kept (a trailing `%` marks a percentage). Linear: whitespace
    runs are collapsed first, and no pattern below can backtrack over more than one space."""
    s = re.sub(r"\s+", " ", s.strip())
    s = (s if s.isascii() else "".join(map(_plain, s))).replace("\\\\", _ROW)
    s = s.replace("\\$", "").replace("$", "").replace(">=", "\\ge ").replace("<=", "\\le ").replace("!=", "\\ne ")
    s = re.sub(r"\\[()\[\]]", "", s)
    s = re.sub(r"\\(?:displaystyle|textstyle|left|right|[bB]ig(?:g|l|r)?|Bigg|hline)(?![A-Za-z])", "", s)
    s = re.sub(r"\\[dtc]frac(?![A-Za-z])", r"\\frac", s)
    s = _FRAC_ARGS_RE.sub(lambda m: "\\frac" + "".join(g if g[0] == "{" else "{" + g + "}" for g in m.groups()), s)
    s = re.sub(r"\\sqrt\s*(\d+)", r"\\sqrt{\1}", s)  # \sqrt2
    # Thousands separators: `14{,}916`, `14 {, }916`, `11,\! 111,\! 100` (a bare `32, 349` stays a pair).
    s = re.sub(r"(?<=\d) ?(?:\{ ?, ?\}|, ?\\!|\\! ?,)(?: ?\\!)? ?(?=\d)", ",", s).replace("\\!", "")
    s = re.sub(r"\\[,;: ]|\\q?quad(?![A-Za-z])|~", " ", s)
    s = re.sub(r" ?(?:\\%|%|\\percent(?![A-Za-z])|(?<![A-Za-z])percent\b)", "%", s)
    s = re.sub(r"\^ ?\{? ?\\circ ?\}?|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])", "", s)
    s = re.sub(r"\\leq?(?:slant)?(?![A-Za-z])", r"\\le ", s)
    s = re.sub(r"\\geq?(?:slant)?(?![A-Za-z])", r"\\ge ", s)
    s = re.sub(r"\\lt(?![A-Za-z])", "<", s)
    s = re.sub(r"\\gt(?![A-Za-z])", ">", s)
    s = _strip_text(s)
    s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip()
    while s.startswith("{") and (inner := _strip_outer(s, "{", "}")) is not None:
        s = inner.strip()  # `{{27}}` -> `27`
    s = re.sub(r"^[A-Za-z]\s*\\in(?![A-Za-z])\s*", "", s)  # x \in [1, 2) -> [1, 2)
    s = re.sub(r"^\((?:\s*[A-Za-z]\s*,)+\s*[A-Za-z]\s*\)\s*=\s*(?=\()", "", s)  # (x, y) = (1, 2) -> (1, 2)
    s = re.sub(r"\\varnothing(?![A-Za-z])|^\\\{\s*\\\}$", r"\\emptyset", s)
    s = re.sub(r"\+\s*\\infty", r"\\infty", s)
    m = re.fullmatch(r"\(\s*([A-Za-z])\s*\)", s)  # multiple choice `(B)` -> `B`
    if m:
        s = m.group(1)
    return s.replace(_ROW, "\\\\")


# A label is a name, not an expression: `x`, `AB`, `|AB|`, `f(x)`, `a_{10}`, `\\angle ABC`, `V_1:V_2`.
_NAME = r"\|?(?:\\[A-Za-z]+(?![A-Za-z])(?: ?[A-Za-z]+)?|[A-Za-z]+)(?:_\{?[A-Za-z0-9]+\}?)?(?:'|\([A-Za-z, ]*\))?\|?"
_ASSIGN_RE = re.compile(rf" ?({_NAME}(?: ?: ?{_NAME})*) ?= ?([^=<>]+)")


def _assignment(s: str) -> tuple[str, str] | None:
    """(label, value) of `x = 3`, `|AB| = 1`, and of `3 = x` (the value written first)."""
    m = _ASSIGN_RE.fullmatch(s)
    if m:
        return m.group(1), m.group(2).strip()
    m = _ASSIGN_RE.fullmatch("=".join(reversed(s.split("=")))) if s.count("=") == 1 else None
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
    """`12 + 15 = 27` (no letters) -> `27`: the model's own arithmetic ends in its answer. A chain whose values
    differ (`12 + 25 = 36 = 37`) states two answers: it stays whole, and matches nothing."""
    if "=" in s and not re.search(r"[A-Za-z<>]", s.replace("\\frac", "").replace("\\cdot", "").replace("\\times", "")):
        values = s.split("=")[1:]
        return values[-1].strip() if len({parse_number(v) for v in values}) == 1 else s
    return s


_NOT_UNITS = {"and", "or", "pi", "plus", "minus", "times", "over", "sqrt", "frac", "cdot"}


def _strip_unit_words(s: str) -> str:
    """`27 apples`, `5 cm^2`, `60 km/h` -> the number: small models write units as plain words."""
    m = re.fullmatch(r"(.*?[\d}]) ?([A-Za-z]{2,20}(?: [A-Za-z]{2,20}){0,2}|[A-Za-z]{1,20}/[A-Za-z]{1,20}) ?(?:\^ ?\{?[23]\}?)?", s)
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
_POWER_RE = re.compile(r"(\d{1,20})\^\{?([+-]?\d{1,4})\}?")  # `10^{309}`, `2^{-3}`: exact, up to MAX_POWER_DIGITS


def parse_number(s: str) -> Fraction | None:
    """An exact Fraction if `s` (already normalised) is a plain number, else None. Never uses floats."""
    s = s.strip()
    if not s or len(s) > MAX_SCALAR_CHARS:
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
    m = _POWER_RE.fullmatch(s)
    if m and len(m.group(1)) * abs(int(m.group(2))) <= MAX_POWER_DIGITS and (int(m.group(1)) or int(m.group(2)) > 0):
        return sign * Fraction(int(m.group(1))) ** int(m.group(2))
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


def _group_before(s: str, i: int) -> int:
    """Index of the bracket that opens the `(...)`/`{...}`/`[...]` group closing at s[i]."""
    depth = 0
    for j in range(i, -1, -1):
        depth += (s[j] == s[i]) - (s[j] == {")": "(", "}": "{", "]": "["}[s[i]])
        if depth == 0:
            return j
    raise _Refused("parse_error", "unbalanced group")


def _factorial_digits(s: str) -> int:
    """Digits of the largest n! in `s` (about n*log10(n)); refuses huge factorials and factorials of expressions."""
    digits = 1
    for m in re.finditer(r"(\d+|[)}\]]) ?!", s):
        if m.group(1).isdigit():
            n = int(m.group(1))
        else:
            start = _group_before(s, m.start())
            content = s[start + 1 : m.start()]
            if re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", content)):
                continue  # symbolic: not evaluated
            value = parse_number(content.strip())
            if value is None or s[:start].rstrip().endswith(("^", "_")):
                raise _Refused("timeout", "factorial of an expression")
            n = int(abs(value))
        if n > MAX_FACTORIAL:
            raise _Refused("timeout", "huge factorial")
        digits = max(digits, int(n * math.log10(max(n, 2))) + 1)
    return digits


def _check_powers(s: str, atom_digits: int) -> None:
    """Refuse towers and powers whose result would exceed MAX_RESULT_DIGITS digits."""
    pairs, product = _brace_pairs(s), 1
    for m in re.finditer(r"\^ ?(\{|\\[A-Za-z]+|.)?", s):
        if m.group(1) is None:
            raise _Refused("parse_error", "dangling ^")
        if m.group(1) == "{" and m.end() - 1 not in pairs:
            raise _Refused("parse_error", "unbalanced braces")
        exponent = s[m.end() : pairs[m.end() - 1]] if m.group(1) == "{" else m.group(1)
        if re.search(r"[A-Za-z]", re.sub(r"\\(?:frac|cdot|times)(?![A-Za-z])", "", exponent)):
            continue  # symbolic exponents are not evaluated
        if "^" in exponent or "!" in exponent:
            raise _Refused("timeout", "exponent tower")
        value = parse_number(exponent.replace("{", "").replace("}", "")) if exponent.strip() else None
        bound = abs(value) if value is not None else math.prod(  # e.g. `3+4`: the product of its literals
            max(2, int(lit)) if len(lit) < 8 else 10**8 for lit in re.findall(r"\d+", exponent))
        if bound > MAX_EXPONENT:
            raise _Refused("timeout", "huge power")
        if not re.search(r"(?<![\\A-Za-z])[A-Za-z] ?$", s[: m.start()]):  # `x^{29}`: no integer grows
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
_ORDERED = {"()", "[]", "(]", "[)"}
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
        parts = _split_top(s, ";")  # `2; 3`
    if len(parts) == 1:
        words = _split_top(s, " and ")  # `2 and 3`; but `rock and roll` is one text answer
        if len(words) > 1 and all(re.search(r"\d", w) for w in words):
            parts = words
    parts = [x for p in parts for x in _expand_pm(p)]
    return ("list", parts) if len(parts) > 1 else None


def _compatible(ka: str, kb: str) -> str | None:
    """'ordered'/'unordered' for kinds that compare, else None. A bare `1, 2` is a set's solutions, a tuple's point."""
    if ka == kb:
        return "ordered" if ka in _ORDERED else "unordered"
    return {frozenset({"list", "\\{\\}"}): "unordered", frozenset({"list", "()"}): "ordered"}.get(frozenset({ka, kb}))


def _as_interval(s: str) -> str | None:
    """One variable's range as an interval: `-2 \\le x \\le 7` -> `[-2, 7]`, `m > 3` -> `(3, \\infty)`; else None."""
    ops = list(_REL_RE.finditer(s))
    terms = [t.strip() for t in re.split(_REL_RE.pattern, s)]
    var = [i for i, t in enumerate(terms) if re.fullmatch(r"[A-Za-z]", t)]
    if not 1 <= len(ops) <= 2 or len(var) != 1 or "," in s or "=" in s:
        return None
    low, high = "(-\\infty", "\\infty)"
    for k, op in enumerate(ops):  # the relation between terms[k] and terms[k + 1]
        if var[0] not in (k, k + 1):
            return None
        bound, less, closed = terms[k + 1 if var[0] == k else k], op.group(0).strip() in ("<", "\\le"), "\\" in op.group(0)
        if (var[0] == k) == less:  # x < bound
            high = bound + ("]" if closed else ")")
        else:
            low = ("[" if closed else "(") + bound
    return f"{low}, {high}"


def _compare(a: str, b: str, full: bool, depth: int = 0) -> str:
    """'correct' / 'mismatch' / 'parse_error' for normalised answer `a` against gold `b`.
    Without `full` (the parent process) it raises _NeedSympy where only sympy can decide."""
    sa, sb = _as_sequence(a), _as_sequence(b)
    ia, ib = (s is not None and s[0] in ("()", "[]", "(]", "[)") for s in (sa, sb))
    if ia != ib and depth == 0 and _as_interval(b if ia else a):  # `x \\ge 2` states the interval `[2, \\infty)`
        return _compare(a if ia else _as_interval(a), _as_interval(b) if ia else b, full, depth + 1)
    if sa is None and sb is None:
        return _compare_scalar(a, b, full)
    if sa is None or sb is None or depth > 3:
        return "mismatch"
    (ka, pa), (kb, pb) = sa, sb
    order = _compatible(ka, kb)
    if order is None or len(pa) != len(pb) or len(pa) > MAX_PARTS:
        return "mismatch"
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
    v, first = (a if pct_a else b), None
    for reading in (v, str(parse_number(v) / 100) if parse_number(v) is not None else f"\\frac{{{v}}}{{100}}"):
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
    decimal = bool(re.search(r"\.\d", a + b))  # the decimal policy: DECIMAL_REL_TOL, the same for every gold
    na, nb = parse_number(a), parse_number(b)
    if na is not None and nb is not None:
        return "correct" if na == nb or (decimal and _close(na, nb, DECIMAL_REL_TOL)) else "mismatch"
    a, b = (a if na is None else str(na)), (b if nb is None else str(nb))  # `1,000` and `4 4/9` for sympy
    if re.fullmatch(r"[A-E]", b):  # multiple choice: `(C) 12`, `C. 12`, `C) 12` answer `C`; not `C + 1`
        m = re.fullmatch(r"\(([A-E])\)(?:\s.*)?|([A-E])[.:)](?:\s.*)?", a)
        return "correct" if m and (m.group(1) or m.group(2)) == b else "mismatch"
    if _WORD_RE.fullmatch(a) or _WORD_RE.fullmatch(b):  # text answers: never products of symbols
        words = [re.sub(r"[^a-z0-9]+", " ", x.lower()).split() for x in (a, b)]
        return "correct" if words[0] == words[1] else "mismatch"
    if _PROSE_RE.search(re.sub(r"\\[A-Za-z]+(?:\{[A-Za-z]+\})?", " ", a)):  # (`\\begin{pmatrix}` is no prose)
        return "mismatch"  # prose, not an expression
    _guard(a)
    _guard(b)
    if not full:
        raise _NeedSympy()
    return _sympy_compare(a, b, decimal)


# ----------------------------------------------------------------------------------------------------------
# Sympy (imported and run only inside a worker process)


class _Timeout(BaseException):  # BaseException: sympy's own `except Exception` must not swallow it
    pass


def _paren_groups(s: str) -> str:
    """Plain-text `sqrt(x)` -> `\\sqrt{x}`, `2^(1/4)` -> `2^{(1/4)}`: latex2sympy reads neither (s*q*r*t(x))."""
    while True:
        m = re.search(r"(?<![\\A-Za-z])sqrt\s*\(|\^\s*\(", s)
        if not m:
            return s
        depth, j = 1, m.end()
        while j < len(s) and depth:
            depth += {"(": 1, ")": -1}.get(s[j], 0)
            j += 1
        if depth:
            raise _Refused("parse_error", "unbalanced (")
        inner = s[m.end() : j - 1]
        s = s[: m.start()] + ("^{(" + inner + ")}" if m.group(0)[0] == "^" else "\\sqrt{" + inner + "}") + s[j:]


def _to_latex_for_sympy(s: str) -> str:
    """What latex2sympy would read otherwise than a grader means: `**`, `sqrt(2)`, `2.5e-4`, and decimals
    (made exact fractions: a decimal is the number it writes, never a float)."""
    s = _paren_groups(s.replace("**", "^")).replace("{smallmatrix}", "{matrix}").replace("{Bmatrix}", "{pmatrix}")
    s = re.sub(r"(?<![A-Za-z\d.])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?![A-Za-z\d])", r"\1 \\times 10^{\2}", s)

    def exact_decimal(m: re.Match) -> str:
        whole, frac = m.group(1), m.group(2)
        return f"(\\frac{{{int(whole + frac)}}}{{1{'0' * len(frac)}}})"  # parenthesised: `4.5\pi` is a product

    return re.sub(r"(?<![\d.])(\d*)\.(\d+)", exact_decimal, s)


def _to_sympy(s: str):
    _guard(s)
    latex = _to_latex_for_sympy(s)
    _guard(latex)
    return _parse(latex)


@functools.lru_cache(maxsize=4096)
def _parse(latex: str):
    """sympy expression for `latex`, evaluated (`2^{100}` becomes an Integer, so exact comparison applies).
    Cached: during training every sample of a question repeats its gold, and many repeat an answer."""
    import sympy
    from latex2sympy2_extended.latex2sympy2 import ConversionConfig, latex2sympy

    expr = latex2sympy(latex, normalization_config=None, conversion_config=ConversionConfig(lowercase_symbols=False))
    if isinstance(expr, sympy.MatrixBase):
        expr = sympy.ImmutableMatrix(expr)
    if not isinstance(expr, sympy.Basic):
        raise TypeError(f"not an expression: {type(expr).__name__}")
    expr = expr.doit()
    subs = {sym: sympy.I for sym in expr.free_symbols if getattr(sym, "name", None) == "i"}
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


def _close(x, y, tol: float = REL_TOL) -> bool:
    # |x - y| <= tol * max(|x|, |y|), in exact Fractions or sympy/mpmath floats, never Python floats.
    return bool(abs(x - y) <= Fraction(tol) * max(abs(x), abs(y)))


def _expr_equal(a, b, decimal: bool = False) -> bool:
    """Equal as values. With a `decimal` on a side, numbers agree to DECIMAL_REL_TOL, rational or not."""
    import sympy

    if isinstance(a, sympy.MatrixBase) or isinstance(b, sympy.MatrixBase):  # same shape, element by element
        return getattr(a, "shape", 0) == getattr(b, "shape", 1) and all(_expr_equal(x, y, decimal) for x, y in zip(a, b))
    if isinstance(a, sympy.Rel) or isinstance(b, sympy.Rel):
        return _relation_equal(a, b)
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return a == b
    if a.has(sympy.zoo, sympy.nan) or b.has(sympy.zoo, sympy.nan):
        return False  # `1:00` and `12:00` both read 1/0: undefined is equal to nothing
    if a == b:
        return True
    if a.is_Rational and b.is_Rational:
        return decimal and _close(a, b, DECIMAL_REL_TOL)  # else 1/2004! is not 1/2006!, however close
    diff = a - b
    if diff == 0 or sympy.simplify(diff) == 0:
        return True
    tol = DECIMAL_REL_TOL if decimal else REL_TOL
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        va, vb = _numeric_value(a), _numeric_value(b)
        return va is not None and vb is not None and _close(va, vb, tol)
    for point in (0.5377, 1.8339, -2.2588):  # numeric check at a few arbitrary points
        subs = {sym: sympy.Rational(str(point)) + sympy.Rational(31, 100) * k for k, sym in enumerate(symbols)}
        va, vb = _numeric_value(a, subs), _numeric_value(b, subs)
        if va is None or vb is None or not _close(va, vb, tol):
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


def _sympy_compare(a: str, b: str, decimal: bool) -> str:
    try:
        eb = _to_sympy(b)
        ea = _to_sympy(a)
    except _Refused:
        raise
    except Exception:  # noqa: BLE001 -- the parser raises many types; all mean "cannot read this"
        return "parse_error"
    return "correct" if _expr_equal(ea, eb, decimal) else "mismatch"


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
    _compare("x (x+1)", "x^2 + x", full=True)  # import sympy and the parser now, not per request
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

    def start(self, deadline: float) -> bool:
        """True once the worker is ready; False if it is still starting at the deadline (it keeps starting)."""
        if not self.ready:
            self.ready = self._read_line(deadline) is not None
        return self.ready

    def ask(self, a: str, b: str, deadline: float) -> str | None:
        """The worker's reason for (a, b); None if it missed the deadline."""
        soft = min(SYMPY_TIME_LIMIT_S, max(0.05, deadline - time.monotonic() - 0.25))  # answer before the kill
        request = json.dumps({"a": a, "b": b, "limit": soft}).encode() + b"\n"
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


def _ask_worker(a: str, b: str, deadline: float) -> str:
    """Reason from a worker for normalised (a, b) by `deadline`: `timeout` when it runs out (the worker is killed)."""
    if len(a) + len(b) > MAX_REQUEST_CHARS:
        return "timeout"  # elements the parent has not looked at yet may be huge
    for _ in range(2):  # a worker that died mid-request (memory, or a kill that raced us): once more
        reason = _ask_once(a, b, deadline)
        if reason != "died":
            return reason
    return "timeout"


def _ask_once(a: str, b: str, deadline: float) -> str:
    pool = _POOL
    worker = pool.take(deadline)
    while worker is not None and worker.proc.poll() is not None:  # it died idle (e.g. the OOM killer): replace it
        worker.kill()
        pool.give_back(None)
        worker = pool.take(deadline)
    if worker is None:
        return "timeout"
    try:
        reason = worker.ask(a, b, deadline) if worker.start(deadline) else "starting"
    except (EOFError, OSError, ValueError):
        reason = "died"  # out of memory or CPU, or killed from outside
    if reason in (None, "memory", "died"):
        worker.kill()
        pool.give_back(None)
    else:
        pool.give_back(worker)  # a worker still starting goes back whole: the next call waits for the same start
    return "timeout" if reason in (None, "memory", "starting") else reason


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


def _gold_values(gold: str) -> str:
    """The normalised gold; a gold list written with `or` (`x = 1 \\text{ or } x = -1`) as a comma list."""
    return _HEDGE_RE.sub(",", _normalize(gold))


def _decide(a: str, b: str, deadline: float) -> str:
    if not a:
        return "no_answer"
    try:
        return _compare(a, b, full=False)
    except _NeedSympy:
        return _ask_worker(a, b, deadline)


def check_math(response: str, gold: str) -> Verdict:
    """Verdict on whether `response`'s final answer equals `gold`. Never raises; returns within HARD_TIME_LIMIT_S
    (plus the wait for a free worker when more than MAX_WORKERS threads check at once)."""
    deadline, extracted = time.monotonic() + HARD_TIME_LIMIT_S, None
    try:
        gold_answer = (_gold_answer(gold) or "").strip() or None
        if gold_answer is not None and len(gold_answer) > MAX_ANSWER_CHARS:
            raise _Refused("timeout", "gold too long")
        b = _gold_values(gold_answer) if gold_answer else ""
        gold_list = _as_sequence(b) if b else None
        many = gold_list is not None and gold_list[0] in ("list", "\\{\\}")  # several values, all to be given
        statements = _final_answers(response, len(gold_list[1]) if many or gold_list and gold_list[0] == "()" else 1)
        if statements is None:
            return Verdict(False, "no_answer", None)
        extracted = " \\text{ or } ".join(statements)
        if not b:
            return Verdict(False, "parse_error", extracted)
        if len(extracted) > MAX_ANSWER_CHARS:
            return Verdict(False, "timeout", extracted)
        # Every value the response states must equal the gold: a hedge (`2 or 3`) scores only when the gold
        # itself has that many values, and then the alternatives of one statement form one list.
        reason = "correct"
        for statement in statements:
            alternatives = [x.strip() for x in _HEDGE_RE.split(_normalize(statement))]
            for a in [", ".join(alternatives)] if many else alternatives:
                reason = _decide(a, b, deadline) if reason == "correct" else reason
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


def task_problem(task) -> str | None:
    """Why a code task is malformed (the reason a dataset row is skipped), or None when the sandbox can run it:
    the sandbox's own validator, so a row that loads is a row that grades."""
    from sandbox import task_problem as sandbox_task_problem

    return sandbox_task_problem(task)


def rewards(responses: list[str], answers: list, task: str) -> list[int]:
    """r(y, a) in {0, 1} for each response: math answers through check_math; code tasks (dicts) through the
    sandbox, all candidates of the batch at once on a pool sized to the cores."""
    if task == "code":
        from sandbox import check_code_batch
        return [int(v.correct) for v in check_code_batch(responses, answers)]
    return [int(check_math(y, a).correct) for y, a in zip(responses, answers)]
