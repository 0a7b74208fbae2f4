"""`python -m flows.cli ...`: the `simcse-curriculum` command line without its script."""

import sys

from flows.cli.app import main

sys.exit(main())
