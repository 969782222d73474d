"""Load the committed HF-transformers goldens and re-create their synthetic checkpoints.

Formats: tests/golden/README.md. The generator script is tests/golden/make_goldens.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "goldens"


def golden_names() -> list[str]:
    return sorted(p.stem for p in GOLDEN_DIR.glob("*.npz"))


def load_golden(name: str) -> dict:
    """Arrays of ``<name>.npz`` plus ``meta`` decoded from JSON."""
    with np.load(GOLDEN_DIR / f"{name}.npz") as z:
        out = {k: z[k] for k in z.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out


def make_checkpoint(name: str, folder: Path) -> Path:
    """Re-create the HF folder a golden was made from; fail if its bytes changed."""
    from weights_tool.synth import synth

    meta = load_golden(name)["meta"]
    out = synth(Path(folder) / name, meta["preset"], seed=meta["seed"],
                overrides=meta["overrides"], force=True)
    h = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    if h != meta["safetensors_sha256"]:
        raise AssertionError(
            f"golden {name}: weights_tool.synth now makes different weights ({h[:12]} != "
            f"{meta['safetensors_sha256'][:12]}); regenerate goldens with tests/golden/make_goldens.py")
    return out


def load_smollm2_chat() -> dict:
    return json.loads((GOLDEN_DIR / "smollm2_chat.json").read_text())
