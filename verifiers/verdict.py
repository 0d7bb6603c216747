"""The verdict every verifier returns, and the reasons it can give: apart, so that no verifier imports verify.py."""
from __future__ import annotations

from dataclasses import dataclass, field

REASONS = ("correct", "no_answer", "mismatch", "parse_error", "timeout", "verifier_error")  # check_math's (verify.py)
CODE_REASONS = REASONS[:-1] + ("runtime_error", "bad_task", "sandbox_error")  # check_code's (verifiers/sandbox.py)
# The verdicts that are no verdict: the verifier itself failed (math: its sympy worker could not start, or died
# twice on one request; code: the sandbox could not be set up). Never the response's doing, so never a reward:
# verify.verdicts and verify.rewards raise RewardUnavailable on them, and a training run stops.
UNAVAILABLE = ("verifier_error", "sandbox_error")


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str  # one of REASONS (math) or CODE_REASONS (code)
    extracted: str | None = None  # the answer (math) or the program (code) that was checked, if any
    # The code verifier's description of the first failing test (input, expected, actual or error), for
    # feedback (SDPO's teacher prompt); None when there is none. It holds expected values, so it never goes to
    # the candidate's sandbox. Not compared: two verdicts with the same reason are equal.
    detail: str | None = field(default=None, compare=False)
