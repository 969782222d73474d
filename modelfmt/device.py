"""WebGPU device knowledge, in one place: the limits a manifest's ``requirements`` name and their
WebGPU defaults, the limits raised to the adapter's maximum when a device is opened, the features
asked for when the adapter has them, and the requirements check. Standard library only.

Consumers: ``driver.gpu.GPU.check_requirements`` and the native device openers
(``driver.native.backend_wgpu``, ``shaders.harness``) import it; the page's ``web/gpu-replay.js``
reads the same facts from ``table()``, which ``python -m pybuild`` writes into the built copy of
that file (between its ``/*@DEVICE@*/`` markers; tests check the source copy matches).
"""

from __future__ import annotations

import re

# Manifest requirement (snake_case, as manifests and driver.gpu.GPU.limits spell it) ->
# (WebGPU limit name, the WebGPU default every adapter offers). A device that does not report a
# limit has the default: the check reads the default, natively and in the page alike.
REQUIRED_LIMITS = {
    "max_storage_buffer_binding_size": ("maxStorageBufferBindingSize", 134217728),
    "max_buffer_size": ("maxBufferSize", 268435456),
    "max_storage_buffers_per_shader_stage": ("maxStorageBuffersPerShaderStage", 8),
}

# Limits requested at the adapter's maximum: big weight bindings and buffers (the defaults are
# too small for the embeddings), big workgroups and shared memory (kernel variants), storage
# buffers per stage (fewer qkv_rope_decode splits), workgroups per dimension (big grids).
RAISED_LIMITS = (
    "maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize",
    "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX", "maxComputeWorkgroupSizeY",
    "maxComputeWorkgroupSizeZ", "maxStorageBuffersPerShaderStage",
    "maxComputeWorkgroupsPerDimension", "maxUniformBufferBindingSize",
)

# Features enabled when the adapter offers them (WebGPU names; shaders.Caps reads the first two
# and the fourth, the bench the third). The fourth is Chromium's (behind --enable-unsafe-webgpu):
# prefill matmuls on the matrix units (shaders/matmul.py). wgpu-py 0.32 spells "subgroups" as
# "subgroup": FEATURE_ALIASES.
WANTED_FEATURES = ("shader-f16", "subgroups", "timestamp-query",
                   "chromium-experimental-subgroup-matrix")
FEATURE_ALIASES = {"subgroups": ("subgroup",)}


def snake(name: str) -> str:
    """maxBufferSize -> max_buffer_size (manifests, driver.gpu) ."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def kebab(name: str) -> str:
    """maxBufferSize -> max-buffer-size (wgpu-py)."""
    return snake(name).replace("_", "-")


def unmet(requirements: dict, limits: dict, features) -> list[tuple]:
    """What a device lacks for a manifest's ``requirements``: ("feature", name) and
    ("limit", snake name, WebGPU name, need, have) entries, [] when it can run the model.
    ``limits``: the device's limits by snake_case name; ``features``: its feature names."""
    out: list[tuple] = []
    have_f = set(features)
    for f in (requirements or {}).get("features", []) or []:
        if f not in have_f and not have_f & set(FEATURE_ALIASES.get(f, ())):
            out.append(("feature", f))
    for name, (webgpu, default) in REQUIRED_LIMITS.items():
        need = int((requirements or {}).get(name, 0) or 0)
        have = int(limits.get(name, default))
        if need > have:
            out.append(("limit", name, webgpu, need, have))
    return out


def table() -> dict:
    """The JSON the page's gpu-replay.js reads (its DEVICE constant)."""
    return {"requiredLimits": [{"requirement": k, "limit": v[0], "default": v[1]}
                               for k, v in REQUIRED_LIMITS.items()],
            "raisedLimits": list(RAISED_LIMITS), "wantedFeatures": list(WANTED_FEATURES)}
