"""Quality benchmark of the embedded model: the same as `streamsep eval` (see its --help).

    python tools/eval_quality.py --corpus /work/data/corpus --engine --json eval.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamsep  # noqa: E402,F401  (BLAS preload before mlx.core)
from streamsep.evaluation import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
