"""Put the source roots on sys.path for entry points that do not start from manage.py."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for entry in (str(ROOT / "platform"), str(ROOT)):
    if entry not in sys.path:
        sys.path.insert(0, entry)
