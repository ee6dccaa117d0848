"""``python -m bridge`` runs the same CLI as the ``chatwoot-bridge`` console script."""

import sys

from bridge.cli import main


sys.exit(main())
