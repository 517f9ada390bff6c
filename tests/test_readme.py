"""The README's command table lists every `dnnspec` command, as docs/cli.md does, and
docs/cli.md's synopsis every flag of each."""

from __future__ import annotations

import argparse
import re

from conftest import ROOT

from dnnspec.cli import COMMANDS, build_parser


def test_the_readme_command_table_lists_every_command() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `dnnspec (\w+)", section, re.M))
    assert listed == set(COMMANDS)


def test_the_cli_synopsis_lists_every_flag_of_every_command() -> None:
    """docs/cli.md's synopsis names each command's every flag (a new one is documented)."""
    synopsis = (ROOT / "docs" / "cli.md").read_text().split("```\n", 2)[1]
    lines: dict[str, str] = {}
    command = ""
    for line in synopsis.splitlines():
        found = re.match(r"dnnspec (\w+)", line)
        command = found.group(1) if found else command
        lines[command] = lines.get(command, "") + line
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {flag}"
        for name, command_parser in sub.choices.items()
        for action in command_parser._actions
        for flag in action.option_strings
        if flag not in ("-h", "--help")
        and not re.search(re.escape(flag) + r"(?![\w-])", lines.get(name, ""))
    ]
    assert not missing
