"""Regenerate docs/cli.md from the parser's own --help texts:
    python docs/make_cli_reference.py"""

import argparse
import contextlib
import io
import os
from pathlib import Path

os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix it so the file is stable

from saex.cli import build_parser


def help_text(argv: list[str]) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        build_parser().parse_args(argv + ["--help"])
    return buf.getvalue().rstrip()


def render() -> str:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    parts = ["# `saex` command reference", "",
             "Generated from `--help` by `python docs/make_cli_reference.py`; do not edit by hand.", "",
             "```", help_text([]), "```"]
    for name, sub in commands.items():
        parts += ["", f"## saex {name}", "", "```", help_text([name]), "```"]
        actions = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        for action in actions:  # a command with actions of its own (saex labels export ...)
            for child in action.choices:
                parts += ["", f"## saex {name} {child}", "", "```", help_text([name, child]), "```"]
    return "\n".join(parts) + "\n"


def main() -> None:
    Path(__file__).with_name("cli.md").write_text(render())


if __name__ == "__main__":
    main()
