"""``python -m turn`` is ``sfu turn``."""

from turn.cli import main

raise SystemExit(main())
