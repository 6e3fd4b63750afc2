"""python -m ftmap.bench"""

from ._cli import main

raise SystemExit(main())
