"""Retraction (issue 25, item 4): only a statement about the box's own value voids the box. It refers back
("that is wrong", "scratch that", "I made a mistake", the reviser's r = 0 phrases, the box's value named again);
remarks about other values, other options, other roots or common slips keep it. The responses are written in
real answer styles: MATH solutions, multiple-choice explanations, AIME write-ups and model self-corrections."""
from __future__ import annotations

import pytest

from verify import check_math

# (response, gold): the box equals the gold and a remark after it is about something else: correct.
KEPT = [
    # MATH solutions: the dataset's `\boxed{}` with a remark on the rejected root, a common slip or another value
    ("Since the length must be positive, $x = \\boxed{3}$. (The other root, $-2$, is not correct because lengths "
     "are positive.)", "3"),
    ("Thus the answer is $\\boxed{5}$. Note that $6$ would be incorrect, since $6 > 5.5$.", "5"),
    ("Adding, $\\frac{1}{2} + \\frac{1}{3} = \\boxed{\\frac{5}{6}}$. A common mistake is to add the numerators and "
     "the denominators, which gives the incorrect $\\frac{2}{5}$.", "\\frac{5}{6}"),
    ("So the slope is $\\boxed{-\\frac{3}{2}}$. It would be incorrect to use the $x$-intercept here, since the line "
     "is not in slope-intercept form.", "-\\frac{3}{2}"),
    ("Hence $n = \\boxed{12}$. Note that $n = 13$ is not the answer, because $13$ does not divide $144$.", "12"),
    ("The only solution is $x = \\boxed{4}$. The value $x = -1$ is incorrect because it makes the radicand "
     "negative.", "4"),
    ("Therefore the probability is $\\boxed{\\frac{1}{4}}$. Students often answer $\\frac{1}{2}$; that is wrong "
     "because the two events are not independent.", "\\frac{1}{4}"),
    ("The sum of the interior angles is $180(n-2) = 1080$, so $n = \\boxed{8}$. It is a mistake to divide by $360$ "
     "here; that formula is for exterior angles.", "8"),
    ("Thus $f(2) = \\boxed{7}$. Plugging in $x = 3$ instead would be wrong, as the problem asks for $f(2)$.", "7"),
    ("So $x = \\boxed{2}$. (Dividing both sides by $x$ would lose the root $x = 0$; that's a classic error.)", "2"),
    ("Therefore, the answer is $\\boxed{\\frac{3}{4}}$. It is wrong to assume the coins are fair here, since the "
     "problem gives their biases.", "\\frac{3}{4}"),
    ("The area is $\\boxed{24}$ square units. Using the hypotenuse as the base without its height would be "
     "incorrect.", "24"),
    # multiple-choice explanations: the other options are wrong
    ("The answer is \\boxed{C}. Options A, B and D are incorrect.", "C"),
    ("The correct choice is \\boxed{B}. (A) is wrong because it ignores friction. (C) is incorrect since the force "
     "is not conservative. (D) is not correct either.", "B"),
    ("\\boxed{D}\n\nExplanation: A is wrong because the slope is negative. B is incorrect: the intercept is 3, not "
     "-3. C is a mistake students make when they forget to distribute.", "D"),
    ("The answer is $\\boxed{(B)}$. Choice (A) is incorrect because $2^{10} = 1024$, not $1000$; choices (C) and (D) "
     "are wrong for the same reason.", "B"),
    ("**Answer: \\boxed{A}**\n\nWhy not the others? B: wrong, it counts the corner twice. C: incorrect, it misses "
     "the center. D: not correct, since order matters.", "A"),
    ("The answer is \\boxed{E}. It is tempting to pick (B), but that is wrong: (B) counts each handshake twice.", "E"),
    ("So the answer is (C), i.e. \\boxed{C}. (A) would be the answer if the ball were dropped, so picking (A) is a "
     "mistake.", "C"),
    # AIME write-ups: a note after the three-digit answer
    ("Thus $m + n = 60 + 5 = \\boxed{065}$. Note that the answer must be written with three digits; $650$ is not "
     "correct.", "65"),
    ("Therefore the remainder when $N$ is divided by $1000$ is $\\boxed{384}$. (A common slip is to reduce modulo "
     "$100$, which gives $84$ -- incorrect.)", "384"),
    ("Thus $p = \\frac{17}{32}$ and $m + n = \\boxed{049}$. We remark that treating the draws as independent would "
     "give $\\frac{1}{2}$, which is wrong.", "49"),
    ("The number of such sequences is $\\boxed{252}$. One might think that each term could be chosen freely, giving "
     "$2^{10}$, but this is incorrect since the terms must increase.", "252"),
    ("Hence the minimum is $\\boxed{112}$, attained at $x = 4$. Note that $x = 0$ is not allowed, so $100$ is not "
     "the answer.", "112"),
    # model-style: a check that confirms the box, a courtesy, a conditional
    ("So the answer is $\\boxed{5}$. Wait, let me double-check: $2 + 3 = 5$. Yes, that's right.", "5"),
    ("The final answer is $\\boxed{8}$. If this is incorrect, please let me know.", "8"),
    ("The final answer is $\\boxed{8}$. If my answer is wrong, please tell me which step fails.", "8"),
    ("\\boxed{10}. Let me verify: if I had made a mistake in the count, the total would not be 10; it is 10, so the "
     "count is right.", "10"),
    ("$\\boxed{7}$\n\nNote: adding instead of multiplying gives 12; that is wrong, and the 7 above is correct.", "7"),
    ("So the answer is \\boxed{3}.\n\nNo, wait -- is that right? Yes: $3^2 = 9$.", "3"),
    ("So the answer is $\\boxed{42}$.\n\nFinal Answer: The final answer is $42$. I hope it is correct.", "42"),
]

# (response, gold, reason): the box equals the gold but the response takes it back: not correct.
VOIDED = [
    ("\\boxed{5}, but that is wrong", "5", "no_answer"),
    ("\\boxed{5}. Wait, that's incorrect.", "5", "no_answer"),
    ("\\boxed{5} -- scratch that", "5", "no_answer"),
    ("\\boxed{5}. Hmm, I made a mistake above.", "5", "no_answer"),
    ("\\boxed{12}. Actually this is not correct; let me redo it.", "12", "no_answer"),
    # the reviser's r = 0 phrases (revise.CONTROL_PHRASES: paper, qwen, olmo)
    ("\\boxed{7}. Wait, this response is not correct, let me start over.", "7", "no_answer"),
    ("So the answer is \\boxed{7}.\n\nWait, this response is wrong. Let me correct it.", "7", "no_answer"),
    ("So the answer is \\boxed{7}.\n\nWrong. I need to redo all.", "7", "no_answer"),
    # model self-corrections: a demonstrative opening the next clause, the box itself, its value named again
    ("Thus $x = \\boxed{4}$. Hmm, that doesn't seem right.", "4", "no_answer"),
    ("The answer is $\\boxed{36}$. But wait, that can't be right, since the total is only 30.", "36", "no_answer"),
    ("$\\boxed{9}$ is not correct, I think.", "9", "no_answer"),
    ("So the answer is $\\boxed{5}$, which is wrong because I dropped a sign.", "5", "no_answer"),
    ("Therefore the answer is $\\boxed{15}$. Wait, $15$ is too big... no, 15 is wrong: the triangle has only 12 "
     "lattice points.", "15", "no_answer"),
    ("\\boxed{48}. It's not the right answer, though; the question wants ordered pairs.", "48", "no_answer"),
    ("\\boxed{8}. That answer is incorrect because it double counts.", "8", "no_answer"),
    ("\\boxed{5}. No, that's not right.", "5", "no_answer"),
    ("\\boxed{17}. But this is incorrect: 17 is not a multiple of 3, as required.", "17", "no_answer"),
    ("**Final Answer**\n\\[\\boxed{21}\\]\n\nWait, that is wrong.", "21", "no_answer"),
    # self-references and first person admissions, anywhere after the box
    ("\\boxed{20}\n\nOn second thought, my answer is wrong: I counted the diagonal twice.", "20", "no_answer"),
    ("So $n = \\boxed{6}$. I was wrong to include zero, so the count is off by one.", "6", "no_answer"),
    ("The answer is \\boxed{B}. Oops, my mistake: B has the wrong sign.", "B", "no_answer"),
    ("\\boxed{3}. Never mind, I misread the question.", "3", "no_answer"),
    ("Final answer: $\\boxed{\\frac{1}{2}}$. I apologize for the mistake in the previous solution.", "\\frac12",
     "no_answer"),
    ("\\boxed{10}. Looking back at the work, the above is incorrect since it uses the wrong formula.", "10",
     "no_answer"),
    ("\\boxed{14}\n\nHold on. Let me reread the problem: it asks for the perimeter. So my previous answer is not "
     "correct.", "14", "no_answer"),
    ("The probability is $\\boxed{\\frac{1}{6}}$. Oh no, I miscalculated the denominator.", "\\frac16", "no_answer"),
    ("**Final Answer** \\boxed{12}\n\nWait -- I think I made an arithmetic error in step 3.", "12", "no_answer"),
    ("The answer is $\\boxed{2}$. Hmm, the boxed answer is wrong; scratch that.", "2", "no_answer"),
    ("So the answer is $\\boxed{100}$. Hmm, actually, I'm wrong -- the sum starts at 0.", "100", "no_answer"),
    # a later, different final answer (the marker logic)
    ("\\boxed{5}. Hmm, that's not right. So \\boxed{6}.", "5", "mismatch"),
    ("I first guessed \\boxed{5}, but that is wrong. Final answer: 7.", "5", "mismatch"),
]


@pytest.mark.parametrize("response, gold", KEPT, ids=[f"kept-{i}" for i in range(len(KEPT))])
def test_remark_about_something_else_keeps_the_box(response, gold):
    v = check_math(response, gold)
    assert v.correct and v.reason == "correct", v


@pytest.mark.parametrize("response, gold, reason", VOIDED, ids=[f"voided-{i}" for i in range(len(VOIDED))])
def test_statement_about_the_box_voids_it(response, gold, reason):
    v = check_math(response, gold)
    assert not v.correct and v.reason == reason, v


def test_a_retraction_between_boxes_leaves_the_later_one():
    """Between two boxes a retraction of the first makes them two statements, the later one final; a remark about
    another value does not."""
    assert check_math("\\boxed{2}. Hmm, that's wrong. \\boxed{3}", "3").correct
    assert check_math("\\boxed{2}. Wait, 2 is incorrect. \\boxed{3}", "3").correct
    assert check_math("$x = \\boxed{2}$ and, since $-1$ is not correct here, $x = \\boxed{3}$.", "2, 3").correct


def test_degenerate_text_after_a_box_is_read():
    """Runs of lead-in words and punctuation, claims and pronouns after a box: only the first _NEAR characters
    are read, with patterns that never backtrack over a run (a super-linear one would stall this test)."""
    for run in ["wait, " * 50_000, ". " * 100_000, "that " * 50_000, "is not " * 30_000, "I " * 100_000]:
        assert check_math("\\boxed{5}" + run + "x", "5").reason in ("correct", "no_answer"), run[:12]


# A later value after the box, as a correction or an alternative: a second statement, so the box alone does not
# score; the same value again, or a remark without a value, keeps it.
LATER = [
    ("\\boxed{5}. Actually, it's 7.", "5", False), ("\\boxed{5}. Sorry, I meant 7.", "5", False),
    ("\\boxed{5}. Correction: 7.", "5", False), ("\\boxed{5}. Nope, 6.", "5", False),
    ("\\boxed{5}. On second thought, it's 7.", "5", False),
    ("The answer is probably \\boxed{5}, but it could be 6.", "5", False), ("\\boxed{5}. Hmm, or maybe 6?", "5", False),
    ("So the answer is \\boxed{B}. Actually, it's D.", "B", False),
    ("\\boxed{5}. Wait, that's wrong. Actually, it's 7.", "7", True),
    ("\\boxed{10}. Actually, 10 is the smallest such value.", "10", True),
    ("Thus \\boxed{4}. Actually this holds for any n.", "4", True),
    ("The correct answer is 5.", "5", True), ("The correct answer is C.", "C", True),
]


@pytest.mark.parametrize("response, gold, correct", LATER, ids=[f"later-{i}" for i in range(len(LATER))])
def test_a_later_value_after_the_box_is_a_second_statement(response, gold, correct):
    assert check_math(response, gold).correct is correct
