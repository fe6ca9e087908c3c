from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_fixtures import recipe_dict, tiny_corpus  # noqa: E402,F401
