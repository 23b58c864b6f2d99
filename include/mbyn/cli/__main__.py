"""``python -m mbyn.cli``: the same as the ``mbyn`` command."""

import sys

from mbyn.cli.main import main

sys.exit(main())
