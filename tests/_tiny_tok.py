"""A byte-level BPE tokenizer.json with no merges (256 ids, one per byte), for tiny random models
that need a real tokenizer (calibration, ``driver quality`` on text). Built with HF tokenizers."""

from __future__ import annotations

import json
from pathlib import Path


def write_byte_tokenizer(folder) -> Path:
    """tokenizer.json in ``folder``: ids 0..255, no special tokens, no BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())            # 256 characters
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    path = Path(folder) / "tokenizer.json"
    path.write_text(json.dumps(json.loads(tok.to_str())))
    return path
