"""``python -m sandboxd`` runs the daemon, like the ``sandboxd`` command."""

import sys

from sandboxd.server.daemon import main

sys.exit(main())
