"""Extraction: what a response states as its final answer(s), read from a bounded tail in linear time.

`_final_answers(response, parts)` returns one string per statement (usually one; alternatives of a hedge
joined by ` \\text{ or } `), or None when the response states nothing; `extract_answer` joins them. The rules
are verify.py's docstring, items 1 and 2 (the last box and the boxes stated with it, answer markers, bare
math, hedges, retractions; no "last number anywhere"). Hand-written: no grader we measured holds this policy
(bench/verify.py), and every pattern here runs in linear time over MAX_TAIL_CHARS characters, whatever the
response (a policy under RL writes degenerate text).
"""
from __future__ import annotations

import re

from verifiers.math_compare import MAX_ANSWER_CHARS, MAX_PARTS, _brace_pairs

MAX_TAIL_CHARS = 100_000  # only the last 100,000 characters after the last </think> are read: answers are at the end

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_MARKER_RE = re.compile(r"final\s+answer(?:\s+is\b|[\s*]*:|\**[ \t]*$)|the\s+(?:correct\s+|right\s+)?answer\s+is\b"
                        r"|\banswer\s*:|^####",
                        re.IGNORECASE | re.MULTILINE)
_EMPTY_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{[\s~$]*\}")
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)")
# Between two boxes: separators only make one list answer (`\boxed{2} \quad \text{and} \quad \boxed{3}`);
# an alternative word makes a hedge (`\boxed{2}, or maybe \boxed{3}`, `\boxed{3} (or possibly \boxed{2})`).
_LIST_GAP_RE = re.compile(r"(?:[\s$,;&~]|\\[()\[\],;:! ]|\\\\|\\q?quad(?![A-Za-z])|\band\b|\\text\{\s*(?:(?:and|,|;)\s*)?\})*",
                          re.IGNORECASE)
_HEDGE_GAP_RE = re.compile(r"\b(?:or|maybe|possibly|perhaps|alternatively|otherwise|either|(?:could|might)\s+also)\b"
                           r"|\\lor(?![A-Za-z])|\\vee(?![A-Za-z])", re.IGNORECASE)
# Retraction: only a statement about the box's own value voids it. Its subject refers back: the box itself or a
# demonstrative that opens the first clause after it (`\boxed{5}, but that is wrong`; further on, `this`/`it` may
# name another value, option or root), the box's value again (`Wait, 5 is wrong`), a self-reference (`my answer`,
# `the above`, the reviser's r = 0 phrases `this response is not correct` and `Wrong. I need to redo all.`), a
# first person admission (`I made a mistake`), or a disowning phrase (`scratch that`). Remarks about other values,
# options or slips (`6 would be incorrect`, `Options A and D are wrong`, `it is incorrect to assume`) keep the box.
_WRONG = r"(?:wrong|incorrect|mistaken|an?\s+(?:mistake|error))"
_RIGHT = r"(?:right|correct|the\s+(?:right\s+|correct\s+|final\s+)?answer)"
# A claim starts at its verb (`'s`, `is`, `isn't`, `can't be`): no pattern hands a run of spaces back to it.
_IS = r"(?:['’]s|\b(?:is|was|must\s+be|seems(?:\s+to\s+be)?|looks|appears(?:\s+to\s+be)?))"
_IS_NOT = (r"\b(?:(?:is|was)n['’]t|(?:can\s*not|can['’]t|could\s+not|couldn['’]t)\s+be"
           r"|does(?:\s+not|n['’]t)\s+(?:seem|look|sound))")
_CLAIM = (rf"(?:{_IS}(?:\s+(?:also|still|actually|definitely|clearly|obviously|certainly|probably|surely|just))?"
          rf"\s+(?:{_WRONG}|not\s+{_RIGHT})|{_IS_NOT}\s+{_RIGHT})"
          r"(?!\s+(?:to|that|if|when|unless)\b)")  # `it is wrong to assume ...`: about something else
# Before the first clause: punctuation and discourse words only, one character or word a step (no run is parsed
# two ways, so no backtracking over it).
_LEAD = (r"(?:[\s$*\\)\]}.,;:!?(\-–—]|\b(?:wait|hmm+|hm|but|actually|no|oh|oops|ah+|well|however|so|ok(?:ay)?|uh|um"
         r"|hold\s+on|on\s+second\s+thought|I\s+(?:think|reali[sz]e|see|notice)|now|sorry|then|and|again|though"
         r"|looking\s+back|on\s+reflection|upon\s+(?:review|reflection))\b)*")
_OPENING_RETRACT_RE = re.compile(
    rf"\A{_LEAD}(?:(?:(?:that|this|it|which)(?:\s+(?:answer|result|value|number|one|box|solution|calculation"
    rf"|computation|reasoning|conclusion|count|sum|total))?\s*)?{_CLAIM}"
    r"|(?:wrong|incorrect|not\s+(?:right|correct))\s*(?:[.!;,]|\Z))", re.IGNORECASE)
_SELF = (r"(?:my|our)(?:\s+{q})?\s+{n}|the\s+{q}\s+{n}|the\s+{n}\s+above|the\s+above|this\s+response".format(
    q=r"(?:previous|earlier|above|last|first|final|original|initial|boxed)",
    n=r"(?:answer|result|response|solution|value|calculation|computation|reasoning|work|conclusion|attempt|box)"))
_RETRACT_RE = re.compile(
    r"(?<!\bif\s)(?<!\bwhether\s)(?<!\bunless\s)\b(?:"
    rf"(?:{_SELF})\s*{_CLAIM}"
    r"|(?:I|we)(?:\s+(?:must|might|may|probably|think\s+(?:I|we)))?(?:\s+(?:have|had)|['’]ve|['’]d)?"
    r"\s+made\s+(?:an?|some)\s+(?:[a-z]+\s+)?(?:mistake|error)"
    r"|(?:I|we)(?:\s+(?:was|were|am|are)|['’](?:m|re))\s+(?:wrong|mistaken|incorrect)"
    r"|(?:I|we)\s+(?:mis(?:calculated|counted|read|computed|applied)|messed\s+up)|my\s+(?:mistake|bad|error)"
    r"|apologi[sz]e\s+for\s+(?:the|my|this|that)\s+(?:[a-z]+\s+)?(?:mistake|error)"
    r"|scratch\s+that|never\s*mind(?=\s*[.,;:!\-–—]|\s*\Z)|need\s+to\s+redo"
    r"|(?:let\s+me|let['’]s|I['’]ll|I\s+(?:will|should|must|need\s+to))\s+start\s+over"
    r"|let\s+me\s+correct\s+(?:it|this|that|myself|my))\b",
    re.IGNORECASE)
_CLAIM_RE = re.compile(_CLAIM, re.IGNORECASE)
# After the last box, another value stated as a correction (`Actually, it's 7.`, `Sorry, I meant 7.`,
# `Correction: 7`, `Nope, 6.`) or as an alternative (`but it could be 6`, `Hmm, or maybe 6?`): a second
# statement, as a later answer marker is, so the box alone does not score. Numbers and option letters only.
_LATER_VALUE_RE = re.compile(
    r"\b(?:actually|correction|i\s+meant|on\s+second\s+thought|nope|no\s+wait|or\s+rather|rather"
    r"|or\s+(?:maybe|perhaps|possibly)|(?:could|might|may)\s+(?:also\s+)?be)\b[ \t,:;!.\-]{0,3}"
    r"(?:(?:it|that|the\s+answer)(?:['’]s|\s+is|\s+(?:should|would|must)\s+be)[ \t]{1,3})?\$?"
    r"(-?\d+(?:[.,/]\d+)*|(?-i:[A-E])\b)", re.IGNORECASE)  # after the box's value itself: `Wait, $5$ is wrong`
_VALUE_EDGE = " \t\n$(,:;="  # what may stand before that value (not `x^2` for 2, nor `15` for 5)
_MATH_SEGMENT_RE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_COPULA_RE = re.compile(r"\b(?:is|are|was|equals|be)\b")
_PROSE_WORD_RE = re.compile(r"(?<![\\A-Za-z])(?!(?:and|sqrt|frac|pi|cdot|times)\b)[A-Za-z]{3,}")
_LAST_NUMBER_RE = re.compile(r"-?\d+(?:[.,/]\d+)*")
_SUM_RE = re.compile(r"[\d ]+(?:[-+*\u00d7] ?[\d ()]+)+")  # `12 + 15` alone echoes a question (or is cut off)
_LABEL_RE = re.compile(r"^(?:\**\s*(?:final\s+)?answer\b[\s*:]*)", re.IGNORECASE)
_NEAR = 200  # what lies between two boxes (or after the last) counts as one statement within this many characters


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


def _retracts(text: str, value: str) -> bool:
    """True when `text`, what follows the stated `value`, takes it back (the rule above _WRONG)."""
    if _OPENING_RETRACT_RE.match(text) or _RETRACT_RE.search(text):
        return True
    value = value.strip()
    for m in _CLAIM_RE.finditer(text):
        before = text[: m.start()].rstrip(" \t\n$")
        if value and before.endswith(value) and before[: -len(value)][-1:] in _VALUE_EDGE:
            return True
    return False


def _gap(text: str, value: str) -> str:
    """How a stated `value` and the next, separated by `text`, relate: `list`, `hedge`, `prose` (near, neutral)
    or `far` (also when `text` takes `value` back)."""
    if _LIST_GAP_RE.fullmatch(text):
        return "list"
    if len(text) > _NEAR or _retracts(text, value):
        return "far"
    return "hedge" if _HEDGE_GAP_RE.search(text) else "prose"


def _group(text: str, spans: list[tuple[int, int, str]], parts: int) -> tuple[list[str], bool]:
    """The last span with the spans stated together with it: joined by separators (a list; also by short prose
    when the gold has `parts` values) or by an alternative word (a hedge). Returns (contents, hedged)."""
    group, hedged = [spans[-1]], False
    for prev in reversed(spans[-MAX_PARTS - 1 : -1]):
        if prev[1] > group[-1][0]:
            break  # `\boxed{\boxed{5}}`: the outer box holds the inner one
        kind = _gap(text[prev[1] : group[-1][0]], prev[2])
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
    taken back by a statement about its own value (`\\boxed{5}, but that is wrong`; not `6 would be incorrect`)
    does not count; one followed by another value, as a correction or an alternative (`Actually, it's 7`, `or
    maybe 6`), is one of two statements. Without box or marker, a response that is nothing but math (`$\\frac13$`, `-5`,
    `Answer \\[ 9 \\]`) is its own answer. `parts` is the number of values the gold has (boxes apart by short
    prose then form one list)."""
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
    other = _LATER_VALUE_RE.search(after[:_NEAR])
    other = other.group(1) if other and other.group(1) != boxes[-1][2].strip(" $") else None
    if _retracts(after[:_NEAR], boxes[-1][2]):
        return [later[1]] if later else [other] if other else None
    return list(dict.fromkeys(answers + ([later[1]] if later else []) + ([other] if other else [])))


def extract_answer(response: str) -> str | None:
    """The final answer in `response` as one string (alternatives of a hedge joined by ` \\text{ or } `), or None."""
    answers = _final_answers(response)
    return None if answers is None else " \\text{ or } ".join(answers)
