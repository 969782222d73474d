"""verify: re-hash every shard of a packed model and check its tensor table against the config.

``verify(out) -> list[str]``: an empty list when OUT is sound, else one line per problem, each
naming the shard or tensor at fault. It never raises on a malformed manifest: a packed model is
input like any other. The manifest's own rules (tensor table, alignment, requirements) are
``modelfmt.manifest.problems``; this module adds what needs the files: sizes, sha256 digests,
content-addressed names, tokenizer files.
"""

from __future__ import annotations

import re
from pathlib import Path

from modelfmt import manifest


from .fetch import sha256_file

_SHARD_NAME = re.compile(r"shard-(\d{3,})-([0-9a-f]{12})\.bin")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def verify(out) -> list[str]:
    out = Path(out)
    m, err = manifest.read(out)
    if err:
        return [err]
    head = manifest.header_problem(m)
    problems: list[str] = [head] if head else []
    shard_sizes = _check_shards(out, m.get("shards"), problems)
    if not head:
        problems += manifest.problems(m, shard_sizes)[1]
    tok = m.get("tokenizer", {})
    for name in (tok.get("files", []) if isinstance(tok, dict) else []):
        if not isinstance(name, str) or Path(name).name != name or not (out / name).is_file():
            problems.append(f"tokenizer file {name!r}: missing")
    return problems


def _check_shards(out: Path, shards, problems: list[str]) -> list[int | None]:
    """Size and sha256 of every shard; returns their sizes (None where unusable)."""
    if not isinstance(shards, list) or not shards:
        return []   # manifest.problems names it
    sizes: list[int | None] = []
    for i, s in enumerate(shards):
        f = s.get("file") if isinstance(s, dict) else None
        if not isinstance(f, str) or not _SHARD_NAME.fullmatch(f):
            problems.append(f"shard {i}: bad file name {f!r}")
            sizes.append(None)
            continue
        path = out / f
        if not _is_int(s.get("nbytes")) or not isinstance(s.get("sha256"), str):
            problems.append(f"shard {f}: missing nbytes or sha256")
            sizes.append(None)
            continue
        if not path.is_file():
            problems.append(f"shard {f}: missing")
            sizes.append(None)
            continue
        size = path.stat().st_size
        if size != s["nbytes"]:
            problems.append(f"shard {f}: {size} bytes on disk, manifest says {s['nbytes']}")
        digest = sha256_file(path)
        if digest != s["sha256"]:
            problems.append(f"shard {f}: sha256 mismatch (corrupt file)")
        elif not f.endswith(f"-{digest[:12]}.bin"):
            problems.append(f"shard {f}: name does not match its sha256 {digest[:12]}")
        sizes.append(min(size, s["nbytes"]))
    return sizes
