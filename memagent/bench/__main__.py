"""``python -m memagent.bench SUITE.yml``."""

import sys

from memagent.bench.cli import main

sys.exit(main())
