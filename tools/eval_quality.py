"""Quality benchmark of the embedded model: a thin wrapper over `streamsep eval`.

    python tools/eval_quality.py --corpus /work/data/corpus --engine --json eval.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamsep  # noqa: F401  (BLAS preload before mlx.core)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamsep.evaluation import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
