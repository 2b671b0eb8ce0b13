import os
import sys
from pathlib import Path

import streamsep.runtime  # noqa: F401  (preloads BLAS before any test imports mlx.core)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
