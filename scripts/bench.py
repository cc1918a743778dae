"""`python scripts/bench.py [args]` = `r1zero-bench [args]` (see r1zero_bench/__init__.py and README "Performance")."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's r1zero, not another install

from r1zero_bench import main

if __name__ == "__main__":
    main()
