"""Docs that cannot rot: every command line in the README and docs/ names a command that exists,
with flags its real argument parser accepts (and, for the pipeline commands, --set keys their strict
parser accepts), and every relative link resolves.

The commands are checked against the parsers themselves (typer/click commands through
``typer.main.get_command``, argparse through ``build_parser()``), never against a copy of their flags.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def doc_files() -> list[Path]:
    files = [ROOT / "README.md"]
    if (ROOT / "docs").is_dir():
        files += sorted((ROOT / "docs").rglob("*.md"))
    return files


@dataclass
class Line:
    file: Path
    lineno: int
    text: str

    def __str__(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.lineno}: {self.text}"


def shell_lines(path: Path) -> list[Line]:
    """Logical lines of the file's fenced shell blocks (continuations joined, prompts removed)."""
    text = path.read_text()
    out: list[Line] = []
    for m in FENCE.finditer(text):
        if m.group(1) not in SHELL_LANGS:
            continue
        first = text[: m.start(2)].count("\n") + 1
        buf, start = "", None
        for i, raw in enumerate(m.group(2).splitlines()):
            line = raw.rstrip()
            if start is None:
                start = first + i
                line = re.sub(r"^\s*\$\s+", "", line)
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            if buf.strip():
                out.append(Line(path, start, " ".join(buf.split())))
            buf, start = "", None
    return out


def segments(line: str) -> list[list[str]]:
    """Split a shell line into simple commands (at ;, &&, ||, |), comments dropped."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    parts: list[list[str]] = [[]]
    for tok in lex:
        if tok and set(tok) <= set(";&|"):
            parts.append([])
        else:
            parts[-1].append(tok)
    return [p for p in parts if p]


def console_scripts() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {name: target.split(":")[0] for name, target in meta["project"]["scripts"].items()}


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


def _parser_of(module: str):
    """The real parser behind a module: a typer app (as a click command) or build_parser()."""
    for name in (module + ".cli", module):
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        if isinstance(getattr(mod, "app", None), typer.Typer):
            return typer.main.get_command(mod.app)
        if callable(getattr(mod, "build_parser", None)):
            return mod.build_parser()
    raise AssertionError(f"module {module} has no command-line parser (typer `app` or `build_parser()`)")


def _click_options(cmd) -> set[str]:
    # typer may carry its own copy of click, so options are recognised by their kind, not their class
    opts = {"--help"}
    for p in cmd.params:
        if getattr(p, "param_type_name", None) == "option":
            opts.update(p.opts)
            opts.update(p.secondary_opts)
    return opts


def check_command(parser, args: list[str], where: Line) -> list[str]:
    """Problems with ``args`` (the words after the command name) for this parser."""
    problems: list[str] = []
    if isinstance(parser, argparse.ArgumentParser):
        known = set(parser._option_string_actions)
        for a in args:
            if a.startswith("-") and a != "-" and a.split("=", 1)[0] not in known:
                problems.append(f"{where}: {parser.prog} has no option {a.split('=', 1)[0]}")
        return problems
    cmd = parser
    rest = list(args)
    # walk into subcommands: the first word that is not an option names one
    while hasattr(cmd, "commands"):  # a group
        words = [a for a in rest if not a.startswith("-")]
        if not words:
            return problems
        sub = cmd.commands.get(words[0])
        if sub is None:
            problems.append(f"{where}: {cmd.name} has no subcommand {words[0]!r}")
            return problems
        rest = rest[rest.index(words[0]) + 1:]
        cmd = sub
    known = _click_options(cmd)
    for a in rest:
        if a.startswith("--") or re.fullmatch(r"-[A-Za-z]", a):
            if a.split("=", 1)[0] not in known:
                problems.append(f"{where}: `{cmd.name}` has no option {a.split('=', 1)[0]}")
    return problems


PIPELINE_MODULES = ("mosic.train", "mosic.precompute")  # commands whose --set keys are pipelines.yaml keys


def check_sets(module: str, args: list[str], where: Line) -> list[str]:
    """Each ``--set KEY=VALUE`` of a pipeline command read by the command's own strict parser."""
    from mosic import MosicError
    from mosic.cli_common import parse_pipeline_sets

    if not module.startswith(PIPELINE_MODULES):
        return []
    problems = []
    for i, a in enumerate(args[:-1]):
        if a == "--set":
            try:
                parse_pipeline_sets([args[i + 1]])
            except MosicError as e:
                problems.append(f"{where}: {e}")
    return problems


def check_line(line: Line, scripts: dict[str, str], targets: set[str]) -> list[str]:
    problems: list[str] = []
    for seg in segments(line.text):
        while seg and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", seg[0]):
            seg = seg[1:]  # environment assignments
        if not seg:
            continue
        prog, args = seg[0], seg[1:]
        if prog in ("python", "python3", "torchrun") or prog.endswith("/python"):
            if "-m" in args and args[args.index("-m") + 1].startswith("mosic"):
                i = args.index("-m")
                module, args = args[i + 1], args[i + 2:]
                problems += check_command(_parser_of(module), args, line)
                problems += check_sets(module, args, line)
        elif prog.startswith("mosic-"):
            if prog not in scripts:
                problems.append(f"{line}: no command {prog} (pyproject.toml [project.scripts])")
            else:
                problems += check_command(_parser_of(scripts[prog].removesuffix(".cli")), args, line)
                problems += check_sets(scripts[prog], args, line)
        elif prog == "make":
            for a in args:
                if a.startswith("-") or "=" in a:
                    continue
                if a not in targets:
                    problems.append(f"{line}: the Makefile has no target {a!r}")
    return problems


def test_every_documented_command_exists_with_its_flags():
    scripts, targets = console_scripts(), make_targets()
    lines = [ln for f in doc_files() for ln in shell_lines(f)]
    assert any("make test" in ln.text for ln in lines), "the README must show `make test`"
    problems = [p for ln in lines for p in check_line(ln, scripts, targets)]
    assert not problems, "commands in the docs that do not run as written:\n" + "\n".join(problems)


def test_every_relative_link_resolves():
    broken = []
    for f in doc_files():
        for m in LINK.finditer(f.read_text()):
            target = (m.group(1) or m.group(2)).split("#", 1)[0]
            if not target or re.match(r"[a-z]+:", target):
                continue
            if not (f.parent / target).exists():
                broken.append(f"{f.relative_to(ROOT)}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


# The checker itself must be able to fail: hand-made lines with a wrong flag, subcommand, target.
@pytest.mark.parametrize(
    "text, bad",
    [
        ("mosic-train --pipeline synthetic --no-such-flag 3", "--no-such-flag"),
        ("mosic-eval runn --model x", "runn"),
        ("make demo && make no-such-target", "no-such-target"),
        ("torchrun --nproc_per_node 2 -m mosic.train --bogus", "--bogus"),
        ("mosic-nothing --help", "mosic-nothing"),
        ("python -m mosic.demo --videos 4 --frobnicate", "--frobnicate"),
        ("mosic-train --pipeline ytvos --set train.loss.temprature=0.2", "train.loss.temprature"),
        ("mosic-precompute --set tracker.grid=many", "tracker.grid"),
    ],
)
def test_checker_catches_wrong_commands(text, bad):
    problems = check_line(Line(ROOT / "README.md", 1, text), console_scripts(), make_targets())
    assert problems and bad in problems[0]


@pytest.mark.parametrize(
    "text",
    [
        "mosic-train --pipeline synthetic --set train.max_steps=2   # a comment --not-a-flag",
        "CUDA_VISIBLE_DEVICES=0 mosic-eval run --model m --weights w.pth \\",
        "make tracks DATASET=ytvos ROOT=/data/ytvos",
        "python -m mosic.demo --videos 4",
    ],
)
def test_checker_accepts_right_commands(text):
    assert check_line(Line(ROOT / "README.md", 1, text.rstrip("\\ ")), console_scripts(), make_targets()) == []


def test_shell_lines_join_continuations_and_drop_prompts(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n```bash\n$ mosic-train --a 1 \\\n    --b 2\nmake demo\n```\n```python\nmosic-x --y\n```\n")
    got = [ln.text for ln in shell_lines(md)]
    assert got == ["mosic-train --a 1 --b 2", "make demo"]


def test_readme_is_a_front_door_and_every_docs_page_is_reachable_from_it():
    readme = (ROOT / "README.md").read_text()
    assert readme.count("\n") < 250, "the README is the front door: keep it under 250 lines, the manual is docs/"
    for command in ("make demo", "make test"):
        assert command in readme
    linked = {(ROOT / (m.group(1) or m.group(2)).split("#", 1)[0]).resolve()
              for m in LINK.finditer(readme) if not re.match(r"[a-z]+:", m.group(1) or m.group(2) or "")}
    pages = set((ROOT / "docs").rglob("*.md"))
    assert pages, "the manual lives in docs/"
    unreachable = sorted(str(p.relative_to(ROOT)) for p in pages if p.resolve() not in linked)
    assert not unreachable, "docs pages the README does not link to:\n" + "\n".join(unreachable)
