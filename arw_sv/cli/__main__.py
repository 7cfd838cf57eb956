"""``python -m arw_sv.cli``: the ``arw-sv`` command."""

import sys

from arw_sv.cli import main

sys.exit(main())
