"""``python -m widthsearch ...`` runs the command line, as the installed ``widthsearch`` does."""
from widthsearch.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
