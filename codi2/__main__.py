"""``python -m codi2`` runs the command line."""

from codi2.cli import main

raise SystemExit(main())
