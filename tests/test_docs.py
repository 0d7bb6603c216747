"""The repository is self-contained: what a user reads (the README, results/, examples/, docs/, the docstrings,
`--help`'s text and the other strings of the code) names only files that are in it, and every markdown link and
its anchor resolves. Users get the repository alone, so a pointer to a file outside it leads nowhere."""
import ast
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Files of the authors' code (princeton-pli/Self-Distillation-Zero), named as the source of a flag's value.
AUTHORS_FILES = {"run_srt_data.sh", "self_critique_pipeline.py", "distillation_math.yaml", "sft.sh", "distill.sh",
                 "prepare_data.py", "cot.txt"}
# A run of path characters: a file named in prose, in backticks or in a command (":function" and "#anchor" end it).
TOKEN = re.compile(r"(?<![\w./~$<>-])[\w.-]*[\w-](?:/[\w.-]+)*/?")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def repo_files() -> list[str]:
    """The repository's files: tracked ones and new ones not ignored (a clone without git: every file but the
    hidden and ignored folders a checkout grows)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
        return sorted({f for f in out.splitlines() if (REPO / f).exists()})
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "runs", "__pycache__", ".pytest_cache"}
        return sorted(str(p.relative_to(REPO)) for p in REPO.rglob("*")
                      if p.is_file() and not skip & set(p.relative_to(REPO).parts))


FILES = repo_files()
TOP = {f.split("/")[0] for f in FILES}  # top-level files and folders: a path that starts with one is ours
NAMES = {f.rsplit("/", 1)[-1] for f in FILES}


def python_text(f: str) -> str:
    """The strings a user reads in a Python file: its docstrings, and outside tests/ its prose (a string with a
    space: --help's text, messages), not a literal such as the file name a candidate program is compiled as."""
    tree = ast.parse((REPO / f).read_text(), f)
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    text = [d for n in nodes if (d := ast.get_docstring(n, clean=False))]
    if "tests" not in Path(f).parts:  # a test's other strings are its fixtures
        text += [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                 and " " in n.value]
    return "\n".join(text)


def named_files(text: str) -> list[str]:
    """The repository files a text names: a path that starts with one of the repository's top-level files or
    folders (results/table.md, tests/fixtures/micro), or a bare name of a markdown or Python file (train.py)."""
    names = []
    for token in TOKEN.findall(text):
        token = token.rstrip(".")
        if "/" in token and token.split("/")[0] in TOP:
            names.append(token)
        elif "/" not in token and token.endswith((".md", ".py")) and not token.startswith("."):
            names.append(token)
    return names


def missing(name: str) -> bool:
    return not (REPO / name).exists() if "/" in name else name not in NAMES | AUTHORS_FILES


def slugs(md: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces as hyphens, a
    repeated heading numbered."""
    seen, out = {}, set()
    text = re.sub(r"^(```|````).*?^\1", "", md.read_text(), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def readable() -> list[tuple[str, str]]:
    """(file, text a user reads) of every markdown and Python file of the repository."""
    out = []
    for f in FILES:
        if f.endswith(".md"):
            out.append((f, (REPO / f).read_text()))
        elif f.endswith(".py"):
            out.append((f, python_text(f)))
    return out


def test_the_files_we_read_are_found():
    assert {"README.md", "train.py", "config.py", "tracking.py", "results/metrics.md", "examples/README.md",
            "verifiers/sandbox.py", "tests/test_docs.py"} <= set(FILES)
    assert named_files("see design.md and `results/table.md`, train.py:main, examples/units_reward.py:reward, "
                       "runs/demo, /shared/runs/paper, model/README.md, owner/name, a .md suffix") == [
        "design.md", "results/table.md", "train.py", "examples/units_reward.py"]


def test_every_file_named_is_in_the_repository():
    """A file name in the README, results/, examples/, docs/, a docstring or --help names a file of this
    repository (or one of the authors' files, cited as a flag's source)."""
    problems = [f"{f}: names {name}, which is not in the repository"
                for f, text in readable() for name in dict.fromkeys(named_files(text)) if missing(name)]
    assert not problems, "\n".join(problems)


def test_every_markdown_link_and_anchor_resolves():
    problems = []
    for f in (f for f in FILES if f.endswith(".md")):
        md = REPO / f
        for target in LINK.findall(md.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            if not dest.exists() or REPO not in (dest, *dest.parents):
                problems.append(f"{f}: link {target}: no such file in the repository")
            elif anchor and dest.suffix == ".md" and anchor not in slugs(dest):
                problems.append(f"{f}: link {target}: {dest.relative_to(REPO)} has no heading #{anchor}")
    assert not problems, "\n".join(problems)
