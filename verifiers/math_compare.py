"""In-process answer comparison: normalisation, exact numbers, size guards, structure and scalars (no sympy).

`_compare(a, b, symbolic)` decides whether a normalised answer equals a normalised gold. It runs twice over:
in the trainer's process with `symbolic=None`, where it decides everything that plain string work and
`fractions.Fraction` can (about 0.1 ms) and raises `_NeedSympy` for the rest; and inside the sympy worker
(verifiers/sympy_worker.py) with `symbolic` its sympy comparison, so that tuples, sets and intervals are
walked by the same code on both sides. verify.py's docstring states the policy; this file is where it is
enforced. Hand-written, because the policy is ours (what a decimal, a percentage, a base or a label means,
what is refused as too costly), not a parser's: the LaTeX parser only ever sees what passes `_guard`.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from fractions import Fraction

MAX_SYMPY_CHARS = 400  # longer scalars are refused before sympy (parse and simplify grow fast with length)
MAX_ANSWER_CHARS = 2_000  # a longer extracted answer (or gold) is refused as `timeout`: no real answer is this long
MAX_SCALAR_CHARS = MAX_ANSWER_CHARS  # exact integers of up to this many digits compare exactly
MAX_POWER_DIGITS = 10_000  # `a^{b}` of integer literals is evaluated exactly in-process up to about this many digits
MAX_PARTS = 20  # tuples, sets, lists and matrices with more elements are not compared
MAX_EXPONENT = 10_000  # largest literal exponent sympy may evaluate
MAX_RESULT_DIGITS = 1_000_000  # rough bound on the digits of any integer sympy may build while parsing
MAX_FACTORIAL = 10_000  # 10000! has 35660 digits: milliseconds
DECIMAL_REL_TOL = 1e-12  # a decimal matches a value it gives to about double precision (rational or irrational)

Symbolic = Callable[[str, str, bool], str]  # (answer, gold, a decimal on a side) -> reason: sympy, in the worker


class _Refused(Exception):
    """An input refused before sympy: `reason` is `timeout` (too costly) or `parse_error` (malformed)."""

    def __init__(self, reason: str, why: str):
        super().__init__(why)
        self.reason = reason


class _NeedSympy(Exception):
    """Raised by the in-process comparison when only sympy (in a worker) can decide."""


def _close(x, y, tol: float) -> bool:
    # |x - y| <= tol * max(|x|, |y|), in exact Fractions or sympy/mpmath floats, never Python floats.
    return bool(abs(x - y) <= Fraction(tol) * max(abs(x), abs(y)))


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


def _compare(a: str, b: str, symbolic: Symbolic | None, depth: int = 0) -> str:
    """'correct' / 'mismatch' / 'parse_error' for normalised answer `a` against gold `b`. Where only sympy can
    decide a scalar it calls `symbolic(a, b, decimal)` (in the worker), or raises _NeedSympy when that is None
    (in the parent process)."""
    sa, sb = _as_sequence(a), _as_sequence(b)
    ia, ib = (s is not None and s[0] in ("()", "[]", "(]", "[)") for s in (sa, sb))
    if ia != ib and depth == 0 and _as_interval(b if ia else a):  # `x \\ge 2` states the interval `[2, \\infty)`
        return _compare(a if ia else _as_interval(a), _as_interval(b) if ia else b, symbolic, depth + 1)
    if sa is None and sb is None:
        return _compare_scalar(a, b, symbolic)
    if sa is None or sb is None or depth > 3:
        return "mismatch"
    (ka, pa), (kb, pb) = sa, sb
    order = _compatible(ka, kb)
    if order is None or len(pa) != len(pb) or len(pa) > MAX_PARTS:
        return "mismatch"
    if order == "unordered":
        unused = list(pb)
        for x in pa:
            hit = next((y for y in unused if _compare(x, y, symbolic, depth + 1) == "correct"), None)
            if hit is None:
                return "mismatch"
            unused.remove(hit)
        return "correct"
    for x, y in zip(pa, pb):
        result = _compare(x, y, symbolic, depth + 1)
        if result != "correct":
            return result
    return "correct"


# ----------------------------------------------------------------------------------------------------------
# Scalars


_WORD_RE = re.compile(r"[A-Za-z]{2,}(?:[\s-]+[A-Za-z]+)*")
_PROSE_RE = re.compile(r"[A-Za-z]{5,}")


def _compare_scalar(a: str, b: str, symbolic: Symbolic | None) -> str:
    if max(len(a), len(b)) > MAX_SCALAR_CHARS and a != b:
        raise _Refused("timeout", "too long")  # also keeps the regexes below linear in practice
    a, b = _drop_assignments(a, b)
    a, b = _last_of_numeric_chain(a), _last_of_numeric_chain(b)
    a, b = _strip_unit_words(a), _strip_unit_words(b)
    pct_a, pct_b = a.endswith("%"), b.endswith("%")
    a, b = a.rstrip("%").strip(), b.rstrip("%").strip()
    if pct_a == pct_b:
        return _compare_value(a, b, symbolic)
    v, first = (a if pct_a else b), None
    for reading in (v, str(parse_number(v) / 100) if parse_number(v) is not None else f"\\frac{{{v}}}{{100}}"):
        result = _compare_value(reading, b, symbolic) if pct_a else _compare_value(a, reading, symbolic)
        if result == "correct":
            return result
        first = first or result
    return first


def _compare_value(a: str, b: str, symbolic: Symbolic | None) -> str:
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
    if symbolic is None:
        raise _NeedSympy()
    return symbolic(a, b, decimal)

