"""The documentation keeps up with the code.

- Every `brain-tasks` command and subcommand (found by walking the click group) has a section in
  docs/operations.md headed by its name, and that section names every option and argument it takes.
- Every environment variable the code defines is in a table of docs/operations.md: the `BRAIN_*` names
  in the package's Python source, the keys `settings.from_environ` reads, and the `${NAME}` variables the
  deployment files (docker-compose*.yml, Procfile) interpolate.  A `BRAIN_*` name in those tables that
  no code reads any more is stale and fails too.
- Every relative link of README.md resolves to an existing file (and heading), and every benchmark
  under bench/ is run by a documented command in the README.

These read files and import the CLI only: no server, no worker.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import click
import pytest

from brain_tasks import settings
from brain_tasks.cli import main

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "brain_tasks"
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
DEPLOY_FILES = ("docker-compose*.yml", "Procfile")

BRAIN_NAME = re.compile(r"\bBRAIN_[A-Z0-9_]+\b")
INTERPOLATED = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\]\(([^)\s]+)\)")


# --- what the code defines -----------------------------------------------------------------------

def cli_commands(command: click.Command = main, path: tuple[str, ...] = ("brain-tasks",)) \
        -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the CLI with its path, groups included, depth first."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from cli_commands(sub, (*path, name))


def parameter_names(command: click.Command) -> list[str]:
    """How the docs must spell each parameter: every flag of an option (`--wait`, `--no-wait`), an
    argument by its metavar (`RUN_ID`)."""
    names = []
    for param in command.params:
        if isinstance(param, click.Argument):
            names.append(param.human_readable_name.upper())
        else:
            names.extend(opt for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--"))
    return names


class _Recorder(Mapping[str, str]):
    """An empty environment that remembers every key asked of it."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return default

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def settings_variables() -> set[str]:
    recorder = _Recorder()
    settings.from_environ(recorder)
    return recorder.asked


def source_variables() -> set[str]:
    """`BRAIN_*` names in the package's Python files and the root celeryconfig.py.  Python only: the
    dashboard's templates use `window.BRAIN_REFRESH_MS`, a page variable, not the environment."""
    files = [*PACKAGE.rglob("*.py"), *ROOT.glob("*config.py")]
    return {name for f in files for name in BRAIN_NAME.findall(f.read_text(encoding="utf-8"))}


def deploy_variables() -> set[str]:
    files = [f for pattern in DEPLOY_FILES for f in ROOT.glob(pattern)]
    return {name for f in files for name in INTERPOLATED.findall(f.read_text(encoding="utf-8"))}


# --- what the docs say ---------------------------------------------------------------------------

def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body up to the next heading of the same or a higher level) for every heading."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        m = HEADING.match(line)
        if not m or _in_code(lines, i):
            continue
        level = len(m.group(1))
        end = next((j for j in range(i + 1, len(lines)) if (h := HEADING.match(lines[j]))
                    and len(h.group(1)) <= level and not _in_code(lines, j)), len(lines))
        found.append((m.group(2), "\n".join(lines[i + 1:end])))
    return found


def _in_code(lines: list[str], index: int) -> bool:
    return sum(1 for line in lines[:index] if line.lstrip().startswith("```")) % 2 == 1


def command_path(heading: str) -> tuple[str, ...] | None:
    """The command a heading like "`brain-tasks status RUN_ID`" documents: its leading plain words."""
    m = re.search(r"`(brain-tasks(?: [^`]*)?)`", heading)
    if not m:
        return None
    words = []
    for word in m.group(1).split():
        if word.startswith(("-", "[")) or not word.islower():
            break
        words.append(word)
    return tuple(words)


def table_names(text: str) -> set[str]:
    """Backticked upper-case names in table rows (the first column of a variable table)."""
    rows = [line for line in text.splitlines() if line.lstrip().startswith("|")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row)}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.fixture(scope="module")
def operations() -> str:
    assert OPERATIONS.exists(), "docs/operations.md is missing"
    return OPERATIONS.read_text(encoding="utf-8")


# --- the checks ----------------------------------------------------------------------------------

def test_the_walk_finds_the_cli() -> None:
    paths = {path for path, _ in cli_commands()}
    assert {("brain-tasks",), ("brain-tasks", "db"), ("brain-tasks", "db", "upgrade"),
            ("brain-tasks", "retrain")} <= paths


def command_problems(doc: str) -> list[str]:
    """What `doc` lacks for the CLI as defined now: a section per command, its options named in it."""
    documented: dict[tuple[str, ...], str] = {}
    for heading, body in sections(doc):
        path = command_path(heading)
        if path:
            documented[path] = documented.get(path, "") + "\n" + heading + "\n" + body
    problems = []
    for path, command in cli_commands():
        name = " ".join(path)
        if path not in documented:
            # A group is documented by its subcommands' sections, unless it has options of its own.
            if isinstance(command, click.Group) and command.commands and not parameter_names(command) \
                    and any(p[:len(path)] == path for p in documented):
                continue
            problems.append(f"no section headed `{name}` in docs/operations.md")
            continue
        missing = [p for p in parameter_names(command) if p not in documented[path]]
        if missing:
            problems.append(f"`{name}`: its section does not name {', '.join(missing)}")
    return problems


def variable_problems(doc: str, wanted: set[str]) -> list[str]:
    return sorted(wanted - table_names(doc))


def code_variables() -> set[str]:
    return settings_variables() | source_variables() | deploy_variables()


def test_every_command_has_a_section_naming_its_options(operations: str) -> None:
    problems = command_problems(operations)
    assert not problems, "\n".join(problems)


def test_every_environment_variable_is_in_a_table(operations: str) -> None:
    assert "BRAIN_DATABASE_URL" in settings_variables()  # the recorder sees what from_environ asks for
    missing = variable_problems(operations, code_variables())
    assert not missing, f"not in a table of docs/operations.md: {', '.join(missing)}"


def test_no_documented_brain_variable_is_stale(operations: str) -> None:
    known = code_variables()
    stale = sorted(n for n in table_names(operations) if n.startswith("BRAIN_") and n not in known)
    assert not stale, f"docs/operations.md documents variables no code reads: {', '.join(stale)}"


def test_readme_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]
    assert any(t.startswith("docs/") for t in targets), "the README links to nothing under docs/"
    broken = []
    for target in targets:
        path, _, anchor = target.partition("#")
        file = (README.parent / path) if path else README
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md":
            anchors = {slug(h) for h, _ in sections(file.read_text(encoding="utf-8"))}
            if anchor not in anchors:
                broken.append(target)
    assert not broken, f"README links that do not resolve: {', '.join(broken)}"


def test_readme_links_every_document() -> None:
    text = README.read_text(encoding="utf-8")
    linked = {t.partition("#")[0] for t in LINK.findall(text)}
    # docs/ha.md is linked from docs/operations.md ("High availability").
    unlinked = sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")
                      if f"docs/{p.name}" not in linked and p.name != "ha.md")
    assert not unlinked, f"documents the README does not link: {', '.join(unlinked)}"


def test_every_benchmark_has_a_documented_command() -> None:
    text = README.read_text(encoding="utf-8")
    scripts = sorted(p.name for p in (ROOT / "bench").glob("*.py") if "__main__" in p.read_text(encoding="utf-8"))
    assert scripts
    missing = [s for s in scripts if not re.search(rf"^\.venv/bin/python bench/{re.escape(s)}\b", text, re.M)]
    assert not missing, f"benchmarks without a command in the README: {', '.join(missing)}"


def test_the_checks_catch_an_undocumented_command_and_variable(operations: str) -> None:
    """A command, an option or a variable added to the code without docs is reported."""
    @click.command("frobnicate")
    def frobnicate() -> None:
        """A command nobody documented."""

    main.add_command(frobnicate)
    retrain = main.commands["retrain"]
    retrain.params.append(click.Option(["--frobnicate-level"]))
    try:
        problems = command_problems(operations)
    finally:
        main.commands.pop("frobnicate")
        retrain.params.pop()
    assert {"`brain-tasks retrain`: its section does not name --frobnicate-level",
            "no section headed `brain-tasks frobnicate` in docs/operations.md"} <= set(problems), problems
    assert "BRAIN_FROBNICATE_LEVEL" in variable_problems(operations, code_variables() | {"BRAIN_FROBNICATE_LEVEL"})
