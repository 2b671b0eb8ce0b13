#!/usr/bin/env python
"""streamsep's SAM-Audio against mlx-audio's, same random weights, input and steps.

    python tools/bench_vs_mlx_audio.py --preset reduced [--json out.json]

A thin entry point: the bench lives in ``streamsep.bench_compare`` (its docstring has the
details, and the install of mlx-audio that keeps torch out:
``pip install --no-deps mlx-audio==0.6.2 sentencepiece``), so that ``streamsep bench --compare
mlx-audio`` runs the same code.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout without installing streamsep.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamsep.bench_compare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
