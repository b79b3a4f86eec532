"""The README is tested: its commands run verbatim on the example study, in order.

Conventions for README.md code blocks:

- The first block (```sh with `make demo` and `make test`) is what CI runs; it is checked to be
  first and is not run here.
- Every later ```sh block is run, line by line, in the order of the README: each `themeshift ...`
  line is split with shlex (a `#` comment is ignored, a trailing backslash joins the next line), the
  leading `themeshift` (or `.venv/bin/themeshift`) is dropped, and the rest is invoked with typer's
  CliRunner on `pipeline.cli.app`, from a temporary folder holding a copy of `examples/` (and
  `configs/`), so `examples/kt_study`, `examples/answer_key/human_codes.csv` and `runs/...` resolve as
  they do from the repository root. Each must exit 0. `cd`, `source`, `open` and `ls` lines are
  skipped; any other command in an ```sh block is an error (mark such a block as not run).
- A block is NOT run when it is marked ```console, ```text (or any language other than sh), or when
  the line before its opening fence is `<!-- not run -->`. Use that for installs (make, pip, pipx),
  commands with placeholders (DIR, my_study), and output shown as an example.
- Every `themeshift` command named in any block, run or not, must exist: `themeshift COMMAND --help`
  (with the subcommand for groups such as `export qdpx`) exits 0.

The run takes a few minutes (one `run` of the example study, one `learn`); keep README blocks that
are run to what a researcher needs, and never run `learn` twice.
"""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
NOT_RUN = "<!-- not run -->"
SKIPPED = {"cd", "source", "open", "ls"}
PROGRAMS = ("themeshift", ".venv/bin/themeshift")
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _blocks(text: str) -> list[tuple[str, str, bool]]:
    """(language, body, marked not run) of every fenced code block, in order."""
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        out.append((m.group(1).lower(), m.group(2), before == NOT_RUN))
    return out


def _lines(body: str) -> list[list[str]]:
    """Each command of a block as shlex tokens, comments dropped, continuation lines joined."""
    commands, pending = [], ""
    for raw in body.splitlines():
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        tokens = shlex.split(line, comments=True)
        if tokens:
            commands.append(tokens)
    return commands


def _prompt(tokens: list[str]) -> list[str]:
    return tokens[1:] if tokens and tokens[0] == "$" else tokens


TEXT = README.read_text(encoding="utf-8")
BLOCKS = _blocks(TEXT)
RUN_BLOCKS = [body for lang, body, not_run in BLOCKS[1:] if lang == "sh" and not not_run]


def _named_commands() -> list[tuple[str, ...]]:
    """Every `themeshift COMMAND [SUBCOMMAND]` named in any code block of the README."""
    import typer.main

    from pipeline.cli import app

    root = typer.main.get_command(app)
    found: set[tuple[str, ...]] = set()
    for _, body, _ in BLOCKS:
        for raw in body.splitlines():
            try:
                tokens = _prompt(shlex.split(raw, comments=True))
            except ValueError:  # output shown in a text block, not a command
                continue
            if not tokens or not any(tokens[0] == p or tokens[0].endswith("/bin/themeshift") for p in PROGRAMS):
                continue
            args = [t for t in tokens[1:] if t != "--log-json"]
            if not args or args[0].startswith("-"):
                continue
            path = (args[0],)
            cmd = getattr(root, "commands", {}).get(args[0])
            if hasattr(cmd, "commands") and len(args) > 1 and not args[1].startswith("-"):  # a group: export qdpx
                path += (args[1],)
            found.add(path)
    return sorted(found)


def test_the_readme_starts_with_the_two_commands_ci_runs():
    assert TEXT.startswith("# themeshift\n\n```sh\nmake demo"), "README.md must open with the make demo block"
    lang, body, _ = BLOCKS[0]
    assert lang == "sh" and [t[:2] for t in _lines(body)] == [["make", "demo"], ["make", "test"]]


def test_every_docs_page_the_readme_links_exists():
    links = re.findall(r"\]\((docs/[^)#]+)", TEXT)
    assert {"docs/validity.md", "docs/shift-calibration.md", "docs/performance.md", "docs/robustness.md"} <= set(links)
    for link in links:
        assert (REPO / link).is_file(), link


@pytest.mark.parametrize("command", _named_commands(), ids=" ".join)
def test_every_command_the_readme_names_exists(command):
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, f"themeshift {' '.join(command)} --help:\n{result.output}"


def test_the_readmes_sh_blocks_run_verbatim_on_the_example_study(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pipeline.cli import app

    shutil.copytree(REPO / "examples", tmp_path / "examples")
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    ran = []
    for body in RUN_BLOCKS:
        for tokens in _lines(body):
            if tokens[0] in SKIPPED:
                continue
            assert tokens[0] in PROGRAMS, (
                f"a ```sh block in README.md runs {shlex.join(tokens)!r}: only themeshift commands run here; "
                f"mark the block ```console or put {NOT_RUN} before it"
            )
            args = tokens[1:]
            result = runner.invoke(app, args)
            assert result.exit_code == 0, (
                f"README command failed (exit {result.exit_code}): themeshift {shlex.join(args)}\n{result.output}"
                + (f"\n{result.exception!r}" if result.exception and not isinstance(result.exception, SystemExit) else "")
            )
            ran.append(args)
    assert any(a[:1] == ["run"] for a in ran), "the README should run the example study"
