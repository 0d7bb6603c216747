"""Rewards: the binary verdict r that every other part of SD-Zero trusts.

`check_math(response, gold) -> Verdict` decides whether a model's final answer equals the gold answer.

What it checks (first version, the one the training loop needs):
  1. Extraction (`extract_answer`): the text after the last `</think>`; the LAST brace-matched non-empty
     `\\boxed{...}` / `\\fbox{...}`; only when there is no non-empty box, the last answer-marker phrase
     ("final answer is X", "the answer is X", "Answer: X"). Empty boxes count as nothing (small models
     write `\\boxed{}` and then the answer in words). There is deliberately no "last number anywhere"
     fallback: it would reward the model for any number that happens to appear in its working.
  2. Hedges (`5 \\text{ or } 7`, `5 or 7`) and lists of candidates never score.
  3. An exact path for plain numbers (integers, decimals, `a/b`, `\\frac{a}{b}`, mixed numbers, `1,000`,
     `\\$`, `\\%`, degrees, units in `\\text{}`, scientific notation): compared with `fractions.Fraction`,
     never floats, and without importing sympy (the trainer calls this thousands of times).
  4. Otherwise sympy: LaTeX normalised, size-guarded, parsed by `sympy.parsing.latex.parse_latex` with the
     lark backend, then exact cancellation / `simplify(a - b) == 0`, then a numeric check with relative
     tolerance 1e-9. Single-variable assignments (`x = 3`) compare as their right-hand side; equations,
     (flipped) inequalities, tuples, intervals and sets compare element-wise.

What it does not do yet (a later issue hardens it):
  * No hard wall-clock limit. Inputs that would make sympy evaluate huge integers (exponent towers,
    `(10^6)!`, strings over 200 characters) are refused before sympy sees them, and on the main thread a
    SIGALRM timer interrupts slow pure-Python parsing/simplification (reason `timeout`). Off the main
    thread there is no timer, and no timer can interrupt long big-integer work in C: a subprocess with a
    hard kill is the planned fix.
  * Matrices, `\\pm`, percent-vs-fraction equivalence (`25\\%` vs `0.25`), base subscripts and many text
    answers are not normalised; such answers only match when their normalised strings are equal.
  * Plain text is never given to `sympy.sympify` (it calls `eval`); it goes through the LaTeX parser.
"""
from __future__ import annotations

import contextlib
import math
import re
import signal
import threading
from dataclasses import dataclass
from fractions import Fraction

REASONS = ("correct", "no_answer", "mismatch", "parse_error", "timeout")
MAX_SYMPY_CHARS = 200  # longer answers are refused before sympy (its Earley parser is cubic)
MAX_EXPONENT = 10_000  # largest literal exponent sympy may evaluate
MAX_RESULT_DIGITS = 1_000_000  # rough bound on the digits of any integer sympy may build while parsing
MAX_FACTORIAL = 10_000  # 10000! has 35660 digits: milliseconds
SYMPY_TIME_LIMIT_S = 2.0  # SIGALRM budget for sympy work (main thread only)
REL_TOL = 1e-9


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str  # one of REASONS
    extracted: str | None = None


# ----------------------------------------------------------------------------------------------------------
# Extraction


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_MARKER_RE = re.compile(r"final\s+answer\s+is|the\s+answer\s+is|answer\s*:", re.IGNORECASE)
_EMPTY_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{[\s~$]*\}")
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)")


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


def _boxes(text: str) -> list[str]:
    """Contents of every brace-matched `\\boxed{...}`/`\\fbox{...}` (also `\\boxed 5`), in order of start."""
    pairs = _brace_pairs(text)
    out = []
    for m in _BOX_RE.finditer(text):
        j = m.end()
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            if j in pairs:
                out.append(text[j + 1 : pairs[j]])
        elif j > m.end():  # `\boxed 5`: one token
            tok = re.match(r"[^\s$]+", text[j:])
            if tok:
                out.append(tok.group(0))
    return out


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
    text = response.rsplit("</think>", 1)[-1]
    for content in reversed(_boxes(text)):
        if not _is_blank(content):
            return content.strip()
    for m in reversed(list(_MARKER_RE.finditer(text))):
        x = _clean_marker_answer(text[m.end() :])
        if x and not _is_blank(x):
            return x
    return None


# ----------------------------------------------------------------------------------------------------------
# Normalisation shared by both comparison paths (plain string work, no sympy)


_TEXT_CMD_RE = re.compile(r"\\(?:text|mbox|mathrm|textbf|mathbf|textit|mathit|textrm|textnormal)\s*\{")
_HEDGE_RE = re.compile(r"\bor\b|\\lor(?![A-Za-z])|\\vee(?![A-Za-z])", re.IGNORECASE)


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
    """Drop trailing units in `\\text{}` (`5 \\text{ cm}`), unwrap the other `\\text{X}` to X."""
    for _ in range(4):
        groups = _text_groups(s)
        if not groups:
            break
        start, _, end = groups[-1]
        if end == len(s.rstrip()) and s[:start].strip():
            s = s[:start].rstrip()
        else:
            break
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
    """LaTeX cosmetics removed: delimiters, spacing, \\left/\\right, \\dfrac, $, %, degrees, units."""
    s = s.strip()
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\[()\[\]]", "", s)
    s = re.sub(r"\\(?:displaystyle|textstyle|left|right|bigl|bigr|Bigl|Bigr|big|Big|bigg|Bigg)(?![A-Za-z])", "", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = s.replace("{,}", ",").replace("\\!", "")
    s = re.sub(r"\\[,;: ]|\\q?quad(?![A-Za-z])|~", " ", s)
    s = re.sub(r"\\%|%|\\percent(?![A-Za-z])", "", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|°", "", s)
    s = _strip_text(s)
    s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip()
    if s.startswith("{"):  # `{{27}}` -> `27`, in one pass (nesting may be thousands deep)
        pairs, i, j = _brace_pairs(s), 0, len(s) - 1
        while i < j and s[i] == "{" and pairs.get(i) == j:
            i, j = i + 1, j - 1
        s = s[i : j + 1].strip()
    m = re.fullmatch(r"\(\s*([A-Za-z])\s*\)", s)  # multiple choice `(B)` -> `B`
    if m:
        s = m.group(1)
    return s


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


# ----------------------------------------------------------------------------------------------------------
# Exact path: plain numbers as fractions.Fraction


_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
_FRAC_PATTERNS = [
    re.compile(rf"({_NUM})/({_NUM})"),
    re.compile(rf"\\frac\{{(-?{_NUM})\}}\{{(-?{_NUM})\}}"),
    re.compile(r"\\frac(\d)(\d)"),
    re.compile(rf"\\frac\{{(-?{_NUM})\}}(\d)"),
    re.compile(rf"\\frac(\d)\{{(-?{_NUM})\}}"),
]
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
    s = s.replace(" ", "")
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
    for pattern in _FRAC_PATTERNS:
        m = pattern.fullmatch(s)
        if m:
            den = Fraction(m.group(2))
            return sign * Fraction(m.group(1)) / den if den else None
    return None


# ----------------------------------------------------------------------------------------------------------
# Guards: refuse what would make sympy build astronomically large integers (it evaluates while parsing)


class _Refused(Exception):
    pass


def _operand_after(s: str, i: int, pairs: dict[int, int]) -> str:
    """The operand of `^` at s[i-1]: a braced group, a `\\command`, or one character."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        raise _Refused("dangling ^")
    if s[i] == "{":
        if i not in pairs:
            raise _Refused("unbalanced braces")
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


def _guard(s: str) -> None:
    """Raise _Refused when `s` could make sympy hang: long, towers, huge powers/factorials/binomials."""
    if len(s) > MAX_SYMPY_CHARS:
        raise _Refused("too long")
    if re.search(r"\\(?:sum|prod|int|iint|iiint|oint|lim|binom|dbinom|tbinom|choose|Gamma)(?![A-Za-z])", s):
        if not re.search(r"\\(?:binom|dbinom|tbinom|choose)", s) or "^" in s or "!" in s or any(
            len(lit) > 4 for lit in re.findall(r"\d+", s)
        ):
            raise _Refused("sums, products, integrals, limits or large binomials")
    if "!!" in s.replace(" ", ""):
        raise _Refused("iterated factorial")
    # Digits of the largest atom sympy will build: a literal, or n! (about n*log10(n) digits).
    atom_digits = max((len(lit) for lit in re.findall(r"\d+", s)), default=1)
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
                raise _Refused("unbalanced group before !")
            start, content = group
            if re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", content)):
                continue  # symbolic: not evaluated
            value = parse_number(content.strip())
            if value is None or s[:start].rstrip().endswith(("^", "_")):
                raise _Refused("factorial of an expression")
            n = int(abs(value))
        if n is not None:
            if n > MAX_FACTORIAL:
                raise _Refused("huge factorial")
            atom_digits = max(atom_digits, int(n * math.log10(max(n, 2))) + 1)
    pairs = _brace_pairs(s)
    product = 1
    for m in re.finditer(r"\^", s):
        exponent = _operand_after(s, m.end(), pairs)
        if re.search(r"[A-Za-z]", re.sub(r"\\(?:frac|cdot|times)(?![A-Za-z])", "", exponent)):
            continue  # symbolic exponents are not evaluated
        if "^" in exponent or "!" in exponent:
            raise _Refused("exponent tower")
        value = parse_number(exponent.replace("{", "").replace("}", "")) if exponent.strip() else None
        if value is None:  # e.g. `3+4`: bound it by the product of its literals
            bound = 1
            for lit in re.findall(r"\d+", exponent):
                bound *= max(2, int(lit)) if len(lit) < 8 else 10**8
        else:
            bound = abs(value)
        if bound > MAX_EXPONENT:
            raise _Refused("huge power")
        product *= max(1, int(bound))
        if product * atom_digits > MAX_RESULT_DIGITS:
            raise _Refused("huge power")


# ----------------------------------------------------------------------------------------------------------
# Sympy path


class _Timeout(BaseException):  # BaseException: sympy's own `except Exception` must not swallow it
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    """SIGALRM timer on the main thread when nobody else uses SIGALRM; a no-op elsewhere."""
    usable = (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
    )
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        for _ in range(3):  # the alarm may fire inside this block too: retry until disarmed
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
                break
            except _Timeout:
                continue


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
            raise _Refused("unbalanced sqrt(")
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


def _to_latex_for_sympy(s: str) -> str:
    s = s.replace("**", "^")
    s = _sqrt_calls(s)
    s = re.sub(r"\\pi(?![A-Za-z])", r"\\mathit{pi}", s)
    s = re.sub(r"(?<![A-Za-z\d.])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?![A-Za-z\d])", r"\1 \\times 10^{\2}", s)

    def exact_decimal(m: re.Match) -> str:
        whole, frac = m.group(1), m.group(2)
        return "{\\frac{%d}{1%s}}" % (int(whole + frac), "0" * len(frac))

    s = re.sub(r"(?<![\d.])(\d*)\.(\d+)", exact_decimal, s)  # exact, not sympy Float
    s = _explicit_products(s)
    return s


def _to_sympy(s: str):
    import sympy
    from sympy.parsing.latex import parse_latex

    _guard(s)
    latex = _to_latex_for_sympy(s)
    _guard(latex)
    expr = parse_latex(latex, backend="lark")
    if not isinstance(expr, sympy.Basic):  # lark returns a Tree for ambiguous input
        raise ValueError("ambiguous parse")
    constants = {"pi": sympy.pi, "e": sympy.E, "i": sympy.I}
    subs = {sym: constants[sym.name] for sym in expr.free_symbols if getattr(sym, "name", None) in constants}
    return expr.xreplace(subs) if subs else expr


def _numeric_value(expr, subs=None):
    """A sympy Float/complex at 30 digits (arbitrary exponent range: 1/2004! does not underflow)."""
    import sympy

    try:
        value = expr.evalf(30, subs=subs)
    except Exception:
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
    diff = a - b
    if diff == 0:
        return True
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        va, vb = _numeric_value(a), _numeric_value(b)
        if va is not None and vb is not None:
            return _close(va, vb)
        return sympy.simplify(diff) == 0
    if sympy.simplify(diff) == 0:
        return True
    for point in (0.5377, 1.8339, -2.2588):  # numeric check at a few arbitrary points
        subs = {sym: sympy.Rational(str(point)) + sympy.Rational(31, 100) * k for k, sym in enumerate(symbols)}
        va, vb = _numeric_value(a, subs), _numeric_value(b, subs)
        if va is None or vb is None or not _close(va, vb):
            return False
    return True


def _relation_equal(a, b) -> bool:
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
    if isinstance(a, sympy.Eq):  # x + 1 = 3 and 3 = x + 1 are the same equation
        return sympy.simplify(da - db) == 0 or sympy.simplify(da + db) == 0
    return sympy.simplify(da - db) == 0


# ----------------------------------------------------------------------------------------------------------
# Comparison


_BRACKETS = [("\\{", "\\}"), ("(", ")"), ("[", "]"), ("(", "]"), ("[", ")")]


def _split_top(s: str) -> list[str]:
    parts, depth, last, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(s[last:i].strip())
            last = i + 1
        i += 1
    parts.append(s[last:].strip())
    return parts


def _as_sequence(s: str) -> tuple[str, list[str]] | None:
    """(bracket kind, elements) for tuples, intervals and sets; None for a single value."""
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        return None  # 1,000 is a number
    for open_, close in _BRACKETS:
        inner = _strip_outer(s, open_, close) if s.startswith(open_) and s.endswith(close) else None
        if inner is not None:
            parts = _split_top(inner)
            if len(parts) > 1 or open_ == "\\{":
                return open_ + close, parts
    parts = _split_top(s)
    return ("", parts) if len(parts) > 1 else None


_WORD_RE = re.compile(r"[A-Za-z]{2,}(?:\s+[A-Za-z]+)*")


_PROSE_RE = re.compile(r"[A-Za-z]{5,}")
_NOT_UNITS = {"and", "or", "pi", "plus", "minus", "times", "over", "sqrt", "frac", "cdot", "i", "e"}


def _strip_unit_words(s: str) -> str:
    """`27 apples`, `5 cm` -> the number: small models write units as plain words."""
    m = re.fullmatch(r"(.*?\d)\s+((?:[A-Za-z]{2,}\s*){1,3})", s)
    if m and parse_number(m.group(1)) is not None and not set(m.group(2).lower().split()) & _NOT_UNITS:
        return m.group(1)
    return s


def _compare_scalar(a: str, b: str) -> str:
    """'correct' / 'mismatch' / 'parse_error' for one normalised answer `a` against gold `b`."""
    a, b = _drop_assignments(a, b)
    a, b = _last_of_numeric_chain(a), _last_of_numeric_chain(b)
    a, b = _strip_unit_words(a), _strip_unit_words(b)
    if a.replace(" ", "") == b.replace(" ", ""):
        return "correct"
    na, nb = parse_number(a), parse_number(b)
    if na is not None and nb is not None:
        return "correct" if na == nb else "mismatch"
    if _WORD_RE.fullmatch(a) or _WORD_RE.fullmatch(b):  # text answers: never products of symbols
        return "correct" if a.lower().split() == b.lower().split() else "mismatch"
    if _PROSE_RE.search(re.sub(r"\\[A-Za-z]+", " ", a)):
        return "mismatch"  # prose, not an expression (and slow for the lark parser)
    try:
        eb = _to_sympy(b)
    except Exception:
        return "parse_error"
    try:
        ea = _to_sympy(a)
    except Exception:
        return "parse_error"
    return "correct" if _expr_equal(ea, eb) else "mismatch"


def _compare(a: str, b: str) -> str:
    sa, sb = _as_sequence(a), _as_sequence(b)
    if sa is None and sb is None:
        return _compare_scalar(a, b)
    if sa is None or sb is None:
        return "mismatch"
    (ka, pa), (kb, pb) = sa, sb
    if len(pa) != len(pb) or len(pa) > 20:
        return "mismatch"
    if ka == "\\{\\}" or kb == "\\{\\}":  # sets: any order, each element used once
        if ka != kb:
            return "mismatch"
        unused = list(pb)
        for x in pa:
            hit = next((y for y in unused if _compare_scalar(x, y) == "correct"), None)
            if hit is None:
                return "mismatch"
            unused.remove(hit)
        return "correct"
    if ka != kb and ka and kb:  # (1, 2] is not [1, 2]; a bare `1, 2` matches `(1, 2)`
        return "mismatch"
    for x, y in zip(pa, pb):
        result = _compare_scalar(x, y)
        if result != "correct":
            return result
    return "correct"


def _gold_answer(gold) -> str | None:
    if isinstance(gold, (int, Fraction)) and not isinstance(gold, bool):
        return str(gold)
    if not isinstance(gold, str):
        return None
    if "\\boxed" in gold or "\\fbox" in gold:
        return extract_answer(gold)
    return gold


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
        if _HEDGE_RE.search(extracted) and not _HEDGE_RE.search(gold_answer):
            return Verdict(False, "mismatch", extracted)
        a, b = _normalize(extracted), _normalize(gold_answer)
        if not a:
            return Verdict(False, "no_answer", extracted)
        if not b:
            return Verdict(False, "parse_error", extracted)
        with _time_limit(SYMPY_TIME_LIMIT_S):
            reason = _compare(a, b)
        return Verdict(reason == "correct", reason, extracted)
    except _Timeout:
        return Verdict(False, "timeout", extracted)
    except Exception:
        return Verdict(False, "parse_error", extracted)
