"""``python -m MedAILib.cli``: the same as the ``medai`` console script (useful inside Slicer's Python)."""

import sys

from MedAILib.cli import main

sys.exit(main())
