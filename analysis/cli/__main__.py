"""``python -m analysis.cli``: the ``lraee`` command line."""
import sys

from analysis.cli import main

sys.exit(main())
