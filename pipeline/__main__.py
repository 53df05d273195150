"""`python -m pipeline` trains; see `python -m pipeline.train --help`."""

import sys

from pipeline.errors import run_cli
from pipeline.train import main

sys.exit(run_cli(main))
