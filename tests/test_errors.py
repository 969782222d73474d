"""Errors cross from Python to the page as data ({kind, message, hint}), and the device requirements are checked by
one rule (modelfmt.device) natively and in the page."""

from __future__ import annotations

import asyncio
import json

import pytest

from driver import backend_js, gpu
from driver.kernel_check import BadCases
from driver.chat import ChatTemplateError
from driver.loader import ContextOverflow, DeviceCannotRun, ModelError
from driver.pretok import TokenizerError
from driver.sampler import BadOption
from modelfmt import device
from modelfmt.config import ConfigError
from modelfmt.manifest import ManifestError

KINDS = {ModelError: "model", ManifestError: "model", DeviceCannotRun: "capability",
         ContextOverflow: "context-overflow", BadOption: "bad-option", ConfigError: "config",
         TokenizerError: "tokenizer", ChatTemplateError: "chat-template", gpu.GPUError: "gpu",
         gpu.WebGPUNotAvailable: "no-webgpu", gpu.ShaderError: "shader", BadCases: "check-cases"}


@pytest.mark.parametrize("cls", sorted(KINDS, key=lambda c: c.__name__))
def test_error_classes_have_a_stable_kind_and_a_hint(cls):
    info = backend_js.error_info(cls("what went wrong, where"))
    assert info == {"kind": KINDS[cls], "message": "what went wrong, where", "hint": cls.hint, "cls": cls.__name__}
    assert cls.hint.strip() and cls.hint.endswith(".")


def test_capability_errors():
    assert backend_js.error_info(gpu.LimitTooLow("max_buffer_size", 10, 5))["kind"] == "capability"
    assert backend_js.error_info(gpu.FeatureMissing("shader-f16"))["kind"] == "capability"
    assert backend_js.error_info(KeyError("x")) == {"kind": "error", "message": "'x'", "hint": "", "cls": "KeyError"}


def test_entry_points_keep_the_last_error_for_the_worker():
    @backend_js._reported
    async def fails():
        raise ContextOverflow("prompt (9 tokens) + max_tokens (8) = 17 exceeds the context of 16")

    with pytest.raises(ContextOverflow):
        asyncio.run(fails())
    assert json.loads(backend_js.last_error_json()) == {
        "kind": "context-overflow", "hint": ContextOverflow.hint, "cls": "ContextOverflow",
        "message": "prompt (9 tokens) + max_tokens (8) = 17 exceeds the context of 16"}
    assert backend_js.open_session.__wrapped__ and backend_js.Session.generate.__wrapped__


def test_unmet_requirements_one_rule():
    req = {"max_buffer_size": 300 << 20, "max_storage_buffers_per_shader_stage": 8, "features": ["subgroups"]}
    # a limit the device does not report has its WebGPU default (256 MiB buffers, 8 storage buffers)
    assert device.unmet(req, {}, ["subgroup"]) == [
        ("limit", "max_buffer_size", "maxBufferSize", 300 << 20, 256 << 20)]
    assert device.unmet(req, {"max_buffer_size": 1 << 30}, ["subgroups"]) == []
    assert device.unmet({**req, "max_storage_buffers_per_shader_stage": 10}, {"max_buffer_size": 1 << 30},
                        []) == [("feature", "subgroups"),
                                ("limit", "max_storage_buffers_per_shader_stage",
                                 "maxStorageBuffersPerShaderStage", 10, 8)]


def test_native_check_uses_the_rule():
    class Dev(gpu.GPU):
        create_buffer = write_buffer = create_pipeline = create_bind_group = submit = None
        read = map_read = sync = None
    Dev.__abstractmethods__ = frozenset()
    d = Dev()
    d.features, d.limits = frozenset(), {"max_buffer_size": 1 << 20}
    with pytest.raises(gpu.LimitTooLow, match="max_storage_buffer_binding_size is 134217728"):
        d.check_requirements({"max_storage_buffer_binding_size": 200 << 20})
    with pytest.raises(gpu.LimitTooLow, match="max_buffer_size is 1048576"):
        d.check_requirements({"max_buffer_size": 2 << 20})
    d.check_requirements({"max_storage_buffers_per_shader_stage": 8, "features": []})
