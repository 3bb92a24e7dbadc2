"""``python -m anycastedge``."""

from anycastedge.cli import main

raise SystemExit(main())
