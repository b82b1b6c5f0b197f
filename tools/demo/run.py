"""Run the lab demo from a checkout without installing it: ``python tools/demo/run.py [--keep]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from demo.cli import main

if __name__ == "__main__":
    sys.exit(main())
