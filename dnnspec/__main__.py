"""`python -m dnnspec` runs the command line."""

import sys

from dnnspec.cli import main

sys.exit(main())
