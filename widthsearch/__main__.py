"""``python -m widthsearch``: the same command line as the ``widthsearch`` script."""
import sys

from widthsearch.cli.main import main

sys.exit(main())
