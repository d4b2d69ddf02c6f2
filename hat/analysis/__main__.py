"""``python -m hat.analysis``: the ``hat-lam`` command."""
import sys

from hat.analysis.cli import main

sys.exit(main())
