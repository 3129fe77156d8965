"""`python -m age2hie_hub ...` is `age2hie-predict ...`."""
from __future__ import annotations

import sys

from age2hie_hub.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
