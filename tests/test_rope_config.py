"""Both rope config forms (classic rope_theta + rope_scaling, transformers 5 rope_parameters) give
the same ModelConfig, through config.json loading and through a whole pack."""

from __future__ import annotations

import json

import pytest
from _checkpoints import write_hf

from modelfmt.config import ModelConfig
from weights_tool.errors import PackError
from weights_tool.hf_load import load_config
from weights_tool.pack import pack

LLAMA3 = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}


def _forms(theta, scaling):
    """(classic, transformers-5) config.json overrides for the same rope."""
    classic = {"rope_theta": theta, "rope_scaling": scaling}
    params = {"rope_theta": theta, **(scaling or {"rope_type": "default"})}
    v5 = {"rope_theta": None, "rope_scaling": None, "rope_parameters": params}
    return classic, v5


def _write(folder, over):
    write_hf(folder)
    d = json.loads((folder / "config.json").read_text())
    for k, v in over.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    (folder / "config.json").write_text(json.dumps(d))
    return folder


@pytest.mark.parametrize("theta, scaling", [
    (500000.0, {"rope_type": "llama3", **LLAMA3}),   # Llama-3.1 / 3.2
    (10000.0, None),                                  # Llama-2 style, no scaling
    (100000.0, None),                                 # SmolLM2
])
def test_rope_forms_equal(tmp_path, theta, scaling):
    classic, v5 = _forms(theta, scaling)
    a = load_config(_write(tmp_path / "a", classic))
    b = load_config(_write(tmp_path / "b", v5))
    assert a == b
    assert a.rope_theta == theta
    assert (a.rope_scaling is None) == (scaling is None)
    if scaling:
        assert a.rope_scaling.factor == 32.0 and a.rope_scaling.rope_type == "llama3"
    assert a.rope_inv_freq() == b.rope_inv_freq()
    ma = pack(tmp_path / "a", tmp_path / "pa", progress=False).manifest
    mb = pack(tmp_path / "b", tmp_path / "pb", progress=False).manifest
    assert ma["config"] == mb["config"]
    assert ModelConfig.from_json(ma["config"]) == a


def test_llama3_scaling_changes_frequencies(tmp_path):
    """Guard against a parser that silently drops the scaling (transformers 4.57's trap)."""
    classic, _ = _forms(500000.0, {"rope_type": "llama3", **LLAMA3})
    plain, _ = _forms(500000.0, None)
    a = load_config(_write(tmp_path / "a", classic)).rope_inv_freq()
    b = load_config(_write(tmp_path / "b", plain)).rope_inv_freq()
    assert a[0] == b[0] and a[-1] == pytest.approx(b[-1] / 32.0)


def test_unknown_rope_type_refused(tmp_path):
    _, v5 = _forms(500000.0, {"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(PackError, match="unsupported rope_type 'yarn'"):
        load_config(_write(tmp_path / "a", v5))
