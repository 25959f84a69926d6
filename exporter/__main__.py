"""``python -m exporter`` is the ``codebook`` command."""

from .cli import main

raise SystemExit(main())
