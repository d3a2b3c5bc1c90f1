"""``python -m loralab``."""
import sys

from .cli import main

sys.exit(main())
