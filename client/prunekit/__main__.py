"""``python -m prunekit``: the ``prunekit`` command."""

import sys

from prunekit.cli import main

sys.exit(main())
