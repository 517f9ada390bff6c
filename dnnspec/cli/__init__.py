"""`dnnspec` command line: a thin layer over the Python API (`dnnspec.api`).

Spec and data mistakes surface as rendered diagnostics with exit code 2; no traceback
reaches the user for them. `--json` switches every command to machine-readable output.

`app.py` parses the command line and dispatches to `commands.py` (one function per
command), which share `common.py` (exit codes, the spec a command names, JSON output);
training draws its progress with `progress.py`. At top level the modules import only what
`--help` needs: a command imports the API, and what it renders with, when it runs.
"""

from dnnspec.cli.app import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
