"""`python -m exporters`; see `python -m exporters --help`."""

import sys

from exporters.export import main
from pipeline.errors import run_cli

sys.exit(run_cli(main))
