"""``python -m hwlat`` runs the command line (the same as the ``hwlat`` script)."""

import sys

from hwlat.cli.main import main

sys.exit(main())
