"""The verifiers behind verify.py's rewards (the contract that the trainer calls lives there).

  verdict.py         Verdict and the reasons it can give (REASONS for math, CODE_REASONS for code)
  math_extract.py    what a response states as its final answer(s): boxes, markers, hedges, the read tail
  math_compare.py    in-process comparison: normalisation, exact numbers, size guards, structure, scalars
  sympy_worker.py    what only sympy decides, in a worker process under a hard time limit, and its parent side
  sandbox.py         the code verifier: task schema, tests, verdicts, batches and their cache
  sandbox_runner.py  one sandbox from the parent: interpreter and uid choice, the setup probe, start and kill
  sandbox_child.py   what runs inside the sandbox (shipped as source, never imported there)
  plugin.py          --reward module:function: the user's callable in worker processes with a time budget
  lifetime.py        worker processes that die with the process that started them

Nothing here imports verify.py. The package imports no third-party library: sympy and its LaTeX parser are
imported only inside the worker process.
"""
