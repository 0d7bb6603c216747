"""An example --reward: physics answers with units, right when the dimensions match and the values agree.

    python train.py --task math --method opsd --dataset examples/physics.jsonl --n1 8 --n2 8 --n-eval 8 \\
        --reward examples/units_reward.py:reward

The contract of a --reward callable (verifiers/plugin.py): `reward(response: str, example: tasks.Example)`
returns a bool (or 0/1) or a verifiers.verdict.Verdict; it runs in a worker process, within --reward-timeout
seconds per call; raising is an error that stops the run (here: a gold answer that is not a quantity).

The response's final answer is what verify.extract_answer reads (the last \\boxed{}, else an answer marker
such as "the answer is ..."); the gold is example.answer. Both are read as a number times a unit: `22.2 m/s`,
`80 \\text{ km/h}`, `3.2\\,\\mathrm{kJ}`, `9.8 m/s^2`, `1.5 \\times 10^{3} N`, `2\\ \\mathrm{kg \\cdot m/s}`,
`3 \\frac{m}{s}`, `5 kilometers per hour`.
Correct when both have the same dimensions (SI base units m, kg, s, A, K, mol) and the values agree to
REL_TOL. The reasons: correct, no_answer (no box), parse_error (not a number with known units), mismatch
(`detail` says whether the dimension or the value differs). Not handled: offset temperatures (degrees C or F),
angles, imperial units, quantities with a tolerance (`5 +- 0.1 m`).
"""
from __future__ import annotations

import functools
import math
import re

from verifiers.verdict import Verdict
from verify import extract_answer

REL_TOL = 0.01  # |value - gold| <= REL_TOL * |gold|: answers rounded to 2-3 significant figures pass

_DIMS = ("m", "kg", "s", "A", "K", "mol")
_ONE = (0, 0, 0, 0, 0, 0)


def _d(m=0, kg=0, s=0, A=0, K=0, mol=0) -> tuple:
    return (m, kg, s, A, K, mol)


# symbol -> (factor to SI, dimensions, takes a prefix)
UNITS = {
    "m": (1.0, _d(m=1), True), "g": (1e-3, _d(kg=1), True), "s": (1.0, _d(s=1), True),
    "A": (1.0, _d(A=1), True), "K": (1.0, _d(K=1), True), "mol": (1.0, _d(mol=1), True),
    "N": (1.0, _d(m=1, kg=1, s=-2), True), "J": (1.0, _d(m=2, kg=1, s=-2), True),
    "W": (1.0, _d(m=2, kg=1, s=-3), True), "Pa": (1.0, _d(m=-1, kg=1, s=-2), True),
    "Hz": (1.0, _d(s=-1), True), "V": (1.0, _d(m=2, kg=1, s=-3, A=-1), True),
    "C": (1.0, _d(s=1, A=1), True), "Ohm": (1.0, _d(m=2, kg=1, s=-3, A=-2), True),
    "L": (1e-3, _d(m=3), True), "l": (1e-3, _d(m=3), True),
    "h": (3600.0, _d(s=1), False), "min": (60.0, _d(s=1), False),
}
PREFIXES = {"G": 1e9, "M": 1e6, "k": 1e3, "c": 1e-2, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# Words (case-insensitive, plural `s` optional) -> symbols; a prefix word may precede them (kilometers)
WORDS = {"meter": "m", "metre": "m", "gram": "g", "second": "s", "sec": "s", "ampere": "A", "amp": "A",
         "kelvin": "K", "mole": "mol", "newton": "N", "joule": "J", "watt": "W", "pascal": "Pa", "hertz": "Hz",
         "volt": "V", "coulomb": "C", "ohm": "Ohm", "liter": "L", "litre": "L", "hour": "h", "hr": "h",
         "minute": "min", "min": "min", "kph": "km/h", "kmh": "km/h"}
PREFIX_WORDS = {"giga": "G", "mega": "M", "kilo": "k", "centi": "c", "milli": "m", "micro": "u", "nano": "n"}


class ParseError(ValueError):
    pass


def _unit(word: str) -> tuple[float, tuple]:
    """(factor, dimensions) of one unit symbol or word."""
    if word in UNITS:
        return UNITS[word][:2]
    if word[0] in PREFIXES and UNITS.get(word[1:], (0, 0, False))[2]:
        factor, dims, _ = UNITS[word[1:]]
        return PREFIXES[word[0]] * factor, dims
    low = word.lower()
    prefix = next((p for p in PREFIX_WORDS if low.startswith(p) and len(low) > len(p)), "")
    base = low[len(prefix):]
    base = base if base in WORDS else base[:-1] if base.endswith("s") and base[:-1] in WORDS else None
    if base is None or (prefix and "/" in WORDS[base]):
        raise ParseError(f"unknown unit {word!r}")
    return _quantity(f"1 {PREFIX_WORDS.get(prefix, '')}{WORDS[base]}")


def _normalize(s: str) -> str:
    s = re.sub(r"\\(left|right|displaystyle)\b|\$|\\[()\[\]]", " ", s)
    s = re.split(r"=|\\approx\b|≈", s)[-1]  # `v = 22 m/s`, `\approx 22 m/s`: the value stated last
    s = re.sub(r"\\[,;:! ]|\\q?quad\b|~", " ", s).replace("{,}", "").replace("−", "-")
    s = re.sub(r"\^\s*\{([^{}]*)\}", r"^(\1)", s)
    for _ in range(4):  # \text{...} and friends (nested at most this deep) keep their content
        s = re.sub(r"\\(?:text|mathrm|textrm|rm|mathit|operatorname)\s*\{([^{}]*)\}", r" \1 ", s)
        s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\\mu\b\s*|[µμ]", "u", s)
    s = re.sub(r"\\Omega\b\s*|Ω", "Ohm", s)
    s = re.sub(r"\\(cdot|times)\b|[·⋅×*]", " * ", s)
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)  # thousands separators
    sup = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")
    s = re.sub(r"[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+", lambda m: "^(" + m.group().translate(sup) + ")", s)
    s = re.sub(r"\bper\b", "/", s).replace("{", " ").replace("}", " ")
    if "\\" in s:
        raise ParseError(f"unknown command in {s.strip()!r}")
    return s.strip()


_NUMBER = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?:\s*(?:\*|x)\s*10\s*\^\s*\(?\s*([+-]?\d+)\s*\)?)?")
_TOKEN = re.compile(r"\s*([A-Za-z]+|[+-]?\d+|[*/^()])")


def _quantity(text: str) -> tuple[float, tuple]:
    """(value in SI units, dimensions) of a quantity written as text."""
    s = _normalize(text)
    m = _NUMBER.match(s)
    if not m:
        raise ParseError(f"no number at the start of {s!r}")
    value = float(m.group(1)) * 10.0 ** int(m.group(2) or 0)
    rest, tokens, pos = s[m.end():], [], 0
    while pos < len(rest.rstrip()):
        t = _TOKEN.match(rest, pos)
        if not t:
            raise ParseError(f"cannot read {rest[pos:].strip()!r}")
        tokens.append(t.group(1))
        pos = t.end()
    factor, dims, i = _product(tokens, 0) if tokens else (1.0, _ONE, 0)
    if i != len(tokens):
        raise ParseError(f"unexpected {tokens[i]!r} in {rest.strip()!r}")
    return value * factor, dims


def _product(tokens: list[str], i: int) -> tuple[float, tuple, int]:
    """factor (('*' | '/' | nothing) factor)*, from tokens[i]; a leading '/' divides 1."""
    factor, dims = 1.0, _ONE
    if i < len(tokens) and tokens[i] != "/":
        factor, dims, i = _power(tokens, i)
    while i < len(tokens) and tokens[i] != ")":
        op = tokens[i] if tokens[i] in "*/" else "*"
        i += tokens[i] in "*/"
        f, d, i = _power(tokens, i)
        sign = -1 if op == "/" else 1
        factor, dims = factor * f ** sign, tuple(a + sign * b for a, b in zip(dims, d))
    return factor, dims, i


def _power(tokens: list[str], i: int) -> tuple[float, tuple, int]:
    """A unit or a bracketed product, with an optional integer power: `s^2`, `s^(-1)`, `(m/s)^2`."""
    if i >= len(tokens):
        raise ParseError("a unit is missing at the end")
    t = tokens[i]
    if t == "(":
        factor, dims, i = _product(tokens, i + 1)
        if i >= len(tokens) or tokens[i] != ")":
            raise ParseError("unbalanced parentheses")
    elif t.isalpha():
        factor, dims = _unit(t)
    elif t == "1":
        factor, dims = 1.0, _ONE
    else:
        raise ParseError(f"unexpected {t!r}")
    i += 1
    if i < len(tokens) and tokens[i] == "^":
        bracket = tokens[i + 1:i + 2] == ["("]
        j = i + 1 + bracket
        if j >= len(tokens) or not re.fullmatch(r"[+-]?\d+", tokens[j]) or (bracket and tokens[j + 1:j + 2] != [")"]):
            raise ParseError("a power must be an integer")
        n = int(tokens[j])
        factor, dims, i = factor ** n, tuple(n * d for d in dims), j + 1 + bracket
    return factor, dims, i


@functools.lru_cache(maxsize=4096)
def quantity(text: str) -> tuple[float, tuple]:
    """(value in SI units, dimensions as exponents of m, kg, s, A, K, mol); ParseError when it is not one."""
    return _quantity(text)


def dimension_text(dims: tuple) -> str:
    return " ".join(f"{u}^{e}" if e != 1 else u for u, e in zip(_DIMS, dims) if e) or "dimensionless"


def reward(response: str, example) -> Verdict:
    """The verdict on one response against example.answer (a quantity with units)."""
    try:
        gold, gold_dims = quantity(example.answer)
    except ParseError as e:  # the dataset's fault, not the model's: stop the run, naming the row
        raise ValueError(f"gold answer {example.answer!r} is not a quantity with known units ({e})") from None
    answer = extract_answer(response)
    if answer is None:
        return Verdict(False, "no_answer")
    try:
        value, dims = quantity(answer)
    except ParseError as e:
        return Verdict(False, "parse_error", answer, str(e))
    if dims != gold_dims:
        return Verdict(False, "mismatch", answer, f"dimension {dimension_text(dims)}, not {dimension_text(gold_dims)}")
    if not math.isclose(value, gold, rel_tol=REL_TOL, abs_tol=0.0):
        return Verdict(False, "mismatch", answer, f"value {value:.6g}, not {gold:.6g} (SI units)")
    return Verdict(True, "correct", answer)
