"""The README's command table lists every `dnnspec` command, as docs/cli.md does."""

from __future__ import annotations

import re

from conftest import ROOT

from dnnspec.cli import COMMANDS


def test_the_readme_command_table_lists_every_command() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `dnnspec (\w+)", section, re.M))
    assert listed == set(COMMANDS)
