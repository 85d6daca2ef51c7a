"""One-off: move refload to the layout of docs/architecture.md (issue #29), in one commit.

    git status --porcelain --untracked-files=no      # must be empty
    /work/main/.venv/bin/python scripts/relayout.py  # the venv's python: it runs its ruff
    python3 ../shared/tools/import_cycles.py . && PYTHONPATH=$PWD mypy && pytest
    git commit -qm "layout (#29): ..."               # staged already; this script removed

Pure moves only (`git mv`), then every reference rewritten wherever it is, so files
other branches added are rewritten too: imports (`from steps import storage`, `from
steps.storage import x`, `import steps.mapping`), dotted strings (registries, STEPS,
monkeypatch targets), paths (`steps/storage.py`, `ROOT / "handler" / "rollback.py"`),
pyproject's package list, code citing ARCHITECTURE.md. Driven by MOVES alone. Refuses to
start when a listed source is missing or a module sits at a package root that neither
MOVES nor KEEP places (add a row, run again on a clean tree).
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# old path -> new path (a .py file, or a package folder moved whole). The table.
MOVES: list[tuple[str, str]] = [
    # handler/: the two ways in. The Lambda entry stays handler.lambda_handler.
    ("handler/dispatch.py", "handler/aws/dispatch.py"),
    ("handler/events.py", "handler/aws/events.py"),
    # the CLI keeps its public name, handler.cli.main
    ("handler/cli.py", "handler/cli/__init__.py"),
    ("handler/pipeline.py", "handler/cli/pipeline.py"),
    ("handler/check.py", "handler/cli/commands/check.py"),
    ("handler/fleet.py", "handler/cli/commands/fleet.py"),
    ("handler/history.py", "handler/cli/commands/history.py"),
    ("handler/status.py", "handler/cli/commands/status.py"),
    ("handler/rollback.py", "handler/cli/commands/rollback.py"),
    ("handler/onboard.py", "handler/cli/commands/init/onboard.py"),
    ("handler/infer_columns.py", "handler/cli/commands/init/infer_columns.py"),
    ("handler/dbt_sources.py", "handler/cli/commands/dbt_sources.py"),
    # steps/: the steps stay; what they share goes to steps/shared/, by concern.
    ("steps/frames.py", "steps/ingest/frames.py"),
    ("steps/config.py", "steps/shared/config/model.py"),
    ("steps/table.py", "steps/shared/config/table.py"),
    ("steps/mapping.py", "steps/shared/mapping/sheet.py"),
    ("steps/checks.py", "steps/shared/checks/registry.py"),
    ("steps/sql.py", "steps/shared/checks/sql.py"),
    ("steps/warehouse", "steps/shared/warehouse"),
    ("steps/alerts.py", "steps/shared/alerts/report.py"),
    ("steps/recovery.py", "steps/shared/alerts/recovery.py"),
    ("steps/storage.py", "steps/shared/io/storage.py"),
    ("steps/secrets.py", "steps/shared/io/secrets.py"),
    ("steps/errors.py", "steps/shared/errors.py"),
    ("steps/names.py", "steps/shared/names.py"),
    ("steps/metrics.py", "steps/shared/metrics.py"),
    ("steps/lineage.py", "steps/shared/lineage.py"),
    ("steps/progress.py", "steps/shared/progress.py"),
]

# What stays where it is (anything else at these roots stops the script: place it first).
KEEP = {
    "handler": {"__init__.py", "__main__.py", "log.py", "progress.py"},
    # the steps (load may become a package with the load-layer work)
    "steps": {
        "__init__.py",
        "ingest",
        "load.py",
        "load",
        "validate.py",
        "notify.py",
        "freshness.py",
    },
}

# New packages: one line saying what each holds.
PACKAGE_DOCS = {
    "handler/aws": "The Lambda way in: event envelopes (S3, EventBridge), routing, dispatch.",
    "handler/cli/commands": "One module per CLI command that is more than a few lines.",
    "handler/cli/commands/init": "`python -m handler init`: a config and sheet from a sample.",
    "steps/shared": "What the steps share, by concern (docs/architecture.md).",
    "steps/shared/config": "Table configs and a config with its mapping sheet (TableSpec).",
    "steps/shared/mapping": "Mapping sheets: parsing, and what each type and transform means.",
    "steps/shared/checks": "Data-quality checks: the registry, and user SQL held to reading.",
    "steps/shared/alerts": "Failure reports, the channels, and recovery when a table passes.",
    "steps/shared/io": "Object storage (local paths, s3://) and secrets kept out of output.",
}

STEPS_DOC = '''"""refload's steps, and (in `shared/`) what they share. docs/architecture.md
draws the flow and says which folder holds what:

    raw file ──ingest──> curated Parquet ──load──> target + ledger ──validate──> audit rows
                                                                     └─ any failure ─> notify

Each step is a module with `run(payload) -> dict` (handler.aws.dispatch.STEPS):
`ingest/` (with its readers, transform, dedupe, hooks, Spark engine and pandas `frames`),
`load`, `validate`, `notify`, and the scheduled `freshness`.
"""
'''

README_LAYOUT = """## Layout

docs/architecture.md draws the flow, says which folder holds what, and what each
extension point costs.

- `handler/`: the two ways in. `__init__` is the Lambda entry (`handler.lambda_handler`);
  `log` and `progress` serve both.
  - `aws/`: `events` (step payloads, S3 and EventBridge envelopes, routing), `dispatch`.
  - `cli/`: `handler.cli.main` and its parser, `pipeline` (the steps in order on one
    machine), and `commands/`: `check`, `fleet` (freshness, status), `status`, `history`,
    `rollback`, `dbt_sources`, `init/` (`onboard`, `infer_columns`).
- `steps/`: one module (or package) per step, each with `run(payload) -> dict`:
  `ingest/` (the step in `__init__`, `sources`, `transform`, `dedupe`, `hooks`, `spark`,
  `frames` for pandas), `load`, `validate`, `notify`, and the scheduled `freshness`.
  - `shared/`: what the steps share, by concern: `config/` (`model`, `table`), `mapping/`
    (`sheet`), `checks/` (`registry`, `sql`), `warehouse/` (the load layer: `client`,
    `catalog`, `publish`, `audit`, `changes`, `modes/` one module per load mode, and each
    dialect with its capabilities), `alerts/` (`report`, `recovery`), `io/` (`storage`,
    `secrets`), `errors`, `names`, `metrics`, `lineage` (OpenLineage), `progress`.
- `hooks/`: the team's `python_transform` functions · `configs/` table configs and mapping
  sheets · `samples/` sample sources · `tests/` (mirrors the code; saved events in
  `tests/events/`) · `scripts/` · `statemachine.asl.json` · `template.yaml` · `Dockerfile` ·
  `docs/adr/` decisions, `docs/architecture.md`.
"""

TEXT_SUFFIXES = {".py", ".md", ".toml", ".json", ".yaml", ".yml", ".sh", ".txt", ".cfg", ".ini"}
TEXT_NAMES = {"Dockerfile", "run"}


def module_of(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts) if path.endswith(".py") else Path(path).parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_of(o): module_of(n) for o, n in MOVES if module_of(o) != module_of(n)}
PATHS = dict(MOVES)


def new_module(name: str) -> str:
    """The module (or `module.attribute`) a dotted name points at after the move."""
    for old in sorted(MODULES, key=len, reverse=True):
        if name == old or name.startswith(old + "."):
            return MODULES[old] + name[len(old) :]
    return name


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def preflight() -> None:
    problems = []
    if git("status", "--porcelain", "--untracked-files=no").strip():
        problems.append("the work tree is not clean")
    for old, new in MOVES:
        if not (ROOT / old).exists():
            problems.append(f"listed source is missing: {old}")
        if old != "handler/cli.py" and (ROOT / new).exists():
            problems.append(f"target already exists: {new}")
    moved = {Path(o).name for o, _ in MOVES if Path(o).parent.name in KEEP}
    for package, kept in KEEP.items():
        for child in sorted((ROOT / package).iterdir()):
            if child.name == "__pycache__" or child.name in kept or child.name in moved:
                continue
            if child.suffix == ".py" or (child / "__init__.py").exists():
                problems.append(f"not placed: {package}/{child.name} (add it to MOVES or KEEP)")
    if problems:
        sys.exit("relayout: refusing to start:\n  " + "\n  ".join(problems))


def move() -> None:
    for old, new in MOVES:
        target = ROOT / new
        target.parent.mkdir(parents=True, exist_ok=True)
        git("mv", old, new)
    for folder, doc in PACKAGE_DOCS.items():
        init = ROOT / folder / "__init__.py"
        if not init.exists():
            init.write_text(f'"""{doc}"""\n')
            git("add", str(init.relative_to(ROOT)))
    for folder in {str(Path(n).parent) for _, n in MOVES}:
        for parent in [Path(folder), *Path(folder).parents]:
            if str(parent) != "." and not (ROOT / parent / "__init__.py").exists():
                sys.exit(f"relayout: package without __init__.py: {parent}")


FROM_IMPORT = re.compile(
    r"^(?P<indent>[ \t]*)from (?P<module>[\w.]+) import "
    r"(?P<names>\((?:[^()]|\n)*?\)|[^\n#(]+?)(?P<comment>[ \t]*#[^\n]*)?$",
    re.M,
)


def rewrite_from_import(match: re.Match[str]) -> str:
    module, indent = match["module"], match["indent"]
    names = [n.strip() for n in match["names"].strip("()").replace("\n", " ").split(",")]
    names = [n for n in names if n and not n.startswith("#")]
    if "\n" in match["names"] and "#" in match["names"]:
        return match[0]  # a commented multi-line import: left to the dotted rewrite
    groups: dict[str, list[str]] = {}
    changed = False
    for entry in names:
        name, _, alias = (p.strip() for p in entry.partition(" as "))
        parent, _, leaf = new_module(f"{module}.{name}").rpartition(".")
        changed |= parent != module
        bound = alias or name
        groups.setdefault(parent, []).append(leaf if leaf == bound else f"{leaf} as {bound}")
    if not changed:
        return match[0]
    lines = [f"{indent}from {parent} import {', '.join(items)}" for parent, items in groups.items()]
    lines[0] += match["comment"] or ""
    return "\n".join(lines)


def dotted_pattern() -> re.Pattern[str]:
    olds = sorted(MODULES, key=len, reverse=True)
    return re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, olds)) + r")(?![\w])")


def path_pattern() -> re.Pattern[str]:
    olds = sorted((o for o, n in MOVES if o != n), key=len, reverse=True)
    return re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, olds)) + r")(?![\w-])")


# ROOT / "handler" / "rollback.py": path segments joined in Python
JOINED = re.compile(r'"(handler|steps)"((?:\s*/\s*"[\w.]+")+)')


def rewrite_joined(match: re.Match[str]) -> str:
    segments = [match[1], *re.findall(r'"([\w.]+)"', match[2])]
    path = "/".join(segments)
    for old, new in sorted(PATHS.items(), key=lambda p: len(p[0]), reverse=True):
        if path == old or path.startswith(old + "/"):
            path = new + path[len(old) :]
            return " / ".join(f'"{s}"' for s in path.split("/"))
    return match[0]


def rewrite(text: str, is_python: bool) -> str:
    if is_python or "from " in text:
        text = FROM_IMPORT.sub(rewrite_from_import, text)
    text = dotted_pattern().sub(lambda m: MODULES[m[1]], text)
    text = path_pattern().sub(lambda m: PATHS[m[1]], text)
    if is_python:
        # code cites the repository's own page, never a file outside it
        text = re.sub(r"(?<![\w/.])ARCHITECTURE\.md", "docs/architecture.md", text)
        text = wrap_long_lines(JOINED.sub(rewrite_joined, text))
    return text


LIMIT = 100  # ruff's line-length: longer names make some prose lines too long


def _docstring_and_comment_lines(text: str) -> tuple[dict[int, str], set[int]]:
    """Line number -> the docstring's indentation, for lines inside a docstring; and the lines
    that are a comment alone. Only these are re-wrapped: breaking them changes no value."""
    docs: dict[int, str] = {}
    comments: set[int] = set()
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    statement_start = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL}
    for i, token in enumerate(tokens):
        if token.type == tokenize.COMMENT and token.line.strip().startswith("#"):
            comments.add(token.start[0])
        if token.type != tokenize.STRING or not token.string.endswith(('"""', "'''")):
            continue
        before = tokens[i - 1].type if i else tokenize.NEWLINE
        after = tokens[i + 1].type if i + 1 < len(tokens) else tokenize.NEWLINE
        if before in statement_start and after in {tokenize.NEWLINE, tokenize.ENDMARKER}:
            for number in range(token.start[0], token.end[0] + 1):
                docs[number] = " " * token.start[1]
    return docs, comments


def _cut(line: str, prefix: str) -> int:
    """Where a long line breaks: the last space that fits after `prefix`, or -1."""
    cut = line.rfind(" ", len(prefix) + 1, LIMIT + 1)
    return cut if cut > len(prefix) and line[:cut].strip() else -1


STRING_LINE = re.compile(r'\s*"[^"\\]*(\\.[^"\\]*)*"')


def wrap_long_lines(text: str) -> str:
    """Prose made too long by longer names, re-flowed into the next line of its paragraph."""
    try:
        docs, comments = _docstring_and_comment_lines(text)
    except (tokenize.TokenError, SyntaxError):
        return text
    lines = text.split("\n")
    kind = {n - 1: ("doc", indent) for n, indent in docs.items()}
    for n in comments:
        line = lines[n - 1]
        kind[n - 1] = ("comment", line[: len(line) - len(line.lstrip())] + "# ")
    i = 0
    while i < len(lines):
        line = lines[i]
        if len(line) <= LIMIT or "noqa" in line:
            i += 1
            continue
        if i in kind:
            prefix = kind[i][1]
            cut = _cut(line, prefix)
            if cut < 0:
                i += 1
                continue
            head, rest = line[:cut].rstrip(), line[cut + 1 :].lstrip()
            lines[i] = head
            following = lines[i + 1] if i + 1 < len(lines) else ""
            body = following[len(prefix) :] if following.startswith(prefix) else ""
            same_paragraph = (
                kind.get(i + 1) == kind[i]
                and body.strip()
                and not body[0].isspace()
                and not body.startswith(('"""', "- ", "* ", "|"))
                and not rest.endswith('"""')
            )
            if same_paragraph:
                lines[i + 1] = prefix + rest + " " + body
            else:
                lines.insert(i + 1, prefix + rest)
                kind = {(k + 1 if k > i else k): v for k, v in kind.items()}
                kind[i + 1] = kind[i]
        elif STRING_LINE.fullmatch(line) and i and lines[i - 1].rstrip().endswith('"'):
            # one literal of an implicit concatenation: cut in two literals, same value
            indent = line[: len(line) - len(line.lstrip())]
            cut = line.rfind(" ", len(indent) + 2, LIMIT - 1)
            if cut > 0:
                lines[i : i + 1] = [line[: cut + 1] + '"', indent + '"' + line[cut + 1 :]]
                kind = {(k + 1 if k > i else k): v for k, v in kind.items()}
        i += 1
    return "\n".join(lines)


def text_files() -> list[Path]:
    files = []
    for name in git("ls-files").splitlines():
        path = ROOT / name
        if name == "scripts/relayout.py" or not path.is_file():
            continue
        if path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES:
            files.append(path)
    return files


def packages() -> list[str]:
    found = []
    for top in ("handler", "steps", "hooks"):
        for init in sorted((ROOT / top).rglob("__init__.py")):
            found.append(".".join(init.parent.relative_to(ROOT).parts))
    return found


def rewrite_pyproject() -> None:
    pyproject = ROOT / "pyproject.toml"
    listed = "".join(f'    "{p}",\n' for p in packages())
    text, count = re.subn(
        r"^packages = \[[^\]]*\]", f"packages = [\n{listed}]", pyproject.read_text(), flags=re.M
    )
    if count != 1:
        sys.exit("relayout: pyproject.toml: no `packages = [...]` under [tool.setuptools]")
    pyproject.write_text(text)


def rewrite_docs() -> None:
    init = ROOT / "steps" / "__init__.py"
    body = init.read_text()
    end = body.index('"""', 3) + 3
    init.write_text(STEPS_DOC + body[end:].lstrip("\n"))
    readme = ROOT / "README.md"
    text, count = re.subn(
        r"^## Layout\n.*?(?=^## |\Z)", README_LAYOUT, readme.read_text(), flags=re.M | re.S
    )
    if count != 1:
        sys.exit("relayout: README.md has no `## Layout` section")
    readme.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-script", action="store_true", help="do not git rm this script")
    args = parser.parse_args()
    preflight()
    move()
    changed = []
    for path in text_files():
        old = path.read_text(encoding="utf-8", errors="surrogateescape")
        new = rewrite(old, path.suffix == ".py")
        if new != old:
            path.write_text(new, encoding="utf-8", errors="surrogateescape")
            changed.append(path)
    rewrite_pyproject()
    rewrite_docs()
    ruff = [sys.executable, "-m", "ruff"]
    subprocess.run([*ruff, "check", "--fix", "--select", "I", "-q", "."], cwd=ROOT, check=False)
    subprocess.run([*ruff, "format", "-q", "."], cwd=ROOT, check=True)
    if not args.keep_script:
        git("rm", "-q", "-f", "scripts/relayout.py")
    git("add", "-A")
    print(f"relayout: {len(MOVES)} moves, {len(changed)} files rewritten; staged, not committed")


if __name__ == "__main__":
    main()
