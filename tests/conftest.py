import os
import shutil
import sys
from pathlib import Path

import streamsep.runtime  # noqa: F401  (preloads BLAS before any test imports mlx.core)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def sam_tiny_with_tokenizer(tmp: Path) -> Path:
    """A copy of the golden tiny SAM-Audio fixture that can take text prompts.

    The fixture ships no tokenizer (t5-base's lives on the hub); a word-level one over its
    100-token vocabulary lets prompts run end to end through the public loader.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    model_dir = tmp / "sam-tiny"
    shutil.copytree(FIXTURES / "sam_tiny_a", model_dir)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "speech": 3, "music": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(model_dir / "t5" / "tokenizer.json"))
    return model_dir


def pytest_collection_modifyitems(config, items):
    """The soak runs first, in a process that has not yet loaded models and run threads of its
    own: its figures are about the engine, not about what earlier tests left behind."""
    items.sort(key=lambda item: 0 if item.nodeid.endswith("test_soak_ci") else 1)
