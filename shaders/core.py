"""Kernel keys, GPU capabilities, uniform-params layouts and WGSL rendering.

Pure Python, no third-party import: it runs in CPython and in Pyodide. WGSL bodies live in
``shaders/*.wgsl``; ``render`` substitutes a few explicit ``{{NAME}}`` tokens and checks none is
left. Set ``SHADERS_DUMP=DIR`` to write every rendered source to ``DIR/<slug>.wgsl``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

_HERE = Path(__file__).resolve().parent


class UnsupportedKernel(ValueError):
    """No variant of this op exists for this combination (format, shape, GPU features)."""


# ---- what the GPU offers ----
@dataclass(frozen=True)
class Caps:
    shader_f16: bool = False      # WGSL `enable f16;` arithmetic
    subgroups: bool = False       # WGSL `enable subgroups;` reductions
    max_workgroup_size: int = 256  # maxComputeInvocationsPerWorkgroup (and size X)
    max_workgroup_storage: int = 16384  # maxComputeWorkgroupStorageSize
    max_storage_binding: int = 128 << 20  # maxStorageBufferBindingSize
    max_workgroups_per_dim: int = 65535
    max_storage_buffers: int = 8  # maxStorageBuffersPerShaderStage (WebGPU default 8; SwiftShader 10)
    # WGSL language feature packed_4x8_integer_dot_product (dot4I8Packed): the q4_0 decode
    # kernels' int8-x path; without it they use the exact f32 unpacking (matvec.default_unpack).
    # Native naga has it; browsers list it in navigator.gpu.wgslLanguageFeatures.
    packed_dot: bool = True
    # chromium-experimental-subgroup-matrix (the GPU's matrix units from WGSL): the adapter's
    # subgroupMatrixConfigs as (component, result, M, N, K) tuples, e.g. ("f16", "f32", 16, 16, 16);
    # () where the device was not opened with the feature. matmul.py's tensor-core tiles need an
    # f16 -> f32 config and subgroups of exactly ``SGMAT_SUBGROUP`` invocations (subgroup_sizes).
    subgroup_matrix: tuple = ()
    subgroup_sizes: tuple = (0, 0)   # (adapter.info.subgroupMinSize, subgroupMaxSize); 0 unknown

    @classmethod
    def from_adapter(cls, features, limits: dict, language_features=None,
                     matrix_configs=None, subgroup_sizes=(0, 0)) -> "Caps":
        """``features``: iterable of WebGPU feature names; ``limits``: WebGPU limit name -> int
        (camelCase or snake_case accepted); ``language_features``: WGSL language feature names
        (``navigator.gpu.wgslLanguageFeatures``), None where the compiler is known (wgpu-py);
        ``matrix_configs``: ``adapter.info.subgroupMatrixConfigs`` as dicts (componentType,
        resultComponentType, M, N, K), used only when the device has the feature."""
        feats = set(features)
        mats = ()
        if "chromium-experimental-subgroup-matrix" in feats:
            mats = tuple(sorted({(str(c["componentType"]), str(c["resultComponentType"]),
                                  int(c["M"]), int(c["N"]), int(c["K"]))
                                 for c in (matrix_configs or ())}))

        def lim(name: str, default: int) -> int:
            snake = "".join("_" + c.lower() if c.isupper() else c for c in name)
            return int(limits.get(name, limits.get(snake, limits.get(snake.replace("_", "-"),
                                                                      default))))

        return cls(
            shader_f16="shader-f16" in feats,
            subgroups="subgroups" in feats or "subgroup" in feats,
            max_workgroup_size=min(lim("maxComputeInvocationsPerWorkgroup", 256),
                                   lim("maxComputeWorkgroupSizeX", 256)),
            max_workgroup_storage=lim("maxComputeWorkgroupStorageSize", 16384),
            max_storage_binding=lim("maxStorageBufferBindingSize", 128 << 20),
            max_workgroups_per_dim=lim("maxComputeWorkgroupsPerDimension", 65535),
            max_storage_buffers=lim("maxStorageBuffersPerShaderStage", 8),
            packed_dot=(language_features is None
                        or "packed_4x8_integer_dot_product" in set(language_features)),
            subgroup_matrix=mats,
            subgroup_sizes=(int(subgroup_sizes[0] or 0), int(subgroup_sizes[1] or 0)),
        )


# ---- uniform params: one field list gives the WGSL struct and the byte packing ----
_WGSL_TYPES = {"u32": "I", "i32": "i", "f32": "f"}


@dataclass(frozen=True)
class Params:
    fields: tuple[tuple[str, str], ...]  # ((name, "u32"|"i32"|"f32"), ...), 4 bytes each

    def wgsl(self, name: str = "Params") -> str:
        body = "".join(f"    {n}: {t},\n" for n, t in self.fields)
        return f"struct {name} {{\n{body}}}\n"

    @property
    def nbytes(self) -> int:
        return max(16, (4 * len(self.fields) + 15) // 16 * 16)  # uniform size: multiple of 16

    def pack(self, **values) -> bytes:
        missing = [n for n, _ in self.fields if n not in values]
        extra = [k for k in values if k not in dict(self.fields)]
        if missing or extra:
            raise ValueError(f"params: missing {missing}, unexpected {extra}")
        fmt = "<" + "".join(_WGSL_TYPES[t] for _, t in self.fields)
        raw = struct.pack(fmt, *(values[n] for n, _ in self.fields))
        return raw + b"\0" * (self.nbytes - len(raw))


# ---- bindings and kernels ----
@dataclass(frozen=True)
class Binding:
    name: str   # the WGSL variable name, also the name the driver binds a buffer by
    kind: str   # "read" | "read_write" | "uniform"
    shape: str = ""  # shape comment, e.g. "(rows, cols/8) u32 packed q4"


@dataclass(frozen=True)
class KernelKey:
    """Everything that makes one rendered WGSL source different from another."""

    op: str
    fmt: str = "f32"          # weight format for ops that read weights
    wg: int = 64              # workgroup size (threads)
    tile: int = 1             # rows (or tokens) per workgroup
    vec: int = 1              # vector width of loads
    f16: bool = False         # uses shader-f16 arithmetic
    subgroups: bool = False   # uses subgroup reductions
    dims: tuple[tuple[str, int], ...] = ()  # model dims baked in as WGSL consts

    def slug(self) -> str:
        parts = [self.op, self.fmt, f"wg{self.wg}", f"t{self.tile}", f"v{self.vec}"]
        if self.f16:
            parts.append("h")
        if self.subgroups:
            parts.append("sg")
        parts += [f"{k}{v}" for k, v in self.dims]
        return "_".join(parts)


@dataclass(frozen=True)
class Grid:
    """The workgroup counts (x, y, z) of a kernel's dispatch: ``fn`` of the runtime values named
    in ``args`` (``("n_tok",)`` for prefill kernels, ``("ctx",)`` for split-K attention), or
    constant (``Grid.fixed``, no args). Called with any runtime dict: it reads only its ``args``
    (missing ones take ``fn``'s defaults)."""

    fn: Callable[..., tuple] = field(compare=False)
    args: tuple[str, ...] = ()

    @classmethod
    def fixed(cls, x: int, y: int = 1, z: int = 1) -> "Grid":
        xyz = (int(x), int(y), int(z))
        return cls(lambda: xyz)

    def __call__(self, **rt) -> tuple[int, int, int]:
        return tuple(self.fn(**{a: rt[a] for a in self.args if a in rt}))

    @property
    def dynamic(self) -> bool:
        return bool(self.args)


@dataclass(frozen=True)
class Kernel:
    key: KernelKey
    wgsl: str
    bindings: tuple[Binding, ...]     # binding i of group 0, in order
    params: Params | None = None      # layout of the binding named "params", if any
    entry: str = "main"
    workgroup_size: tuple[int, int, int] = (64, 1, 1)
    features: tuple[str, ...] = ()    # WebGPU features the device must have enabled
    grid: Grid | None = field(default=None, compare=False, hash=False)   # its dispatch grid
    # extras of some ops: rows_per_wg, part_bytes (split-K partials), cand_bytes, tile,
    # language_features (WGSL language features the source needs)
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def slug(self) -> str:
        return self.key.slug()

    @property
    def storage_buffers(self) -> int:
        """Storage-buffer bindings (read or read_write): counted against the adapter's
        maxStorageBuffersPerShaderStage when the pipeline is created."""
        return sum(b.kind != "uniform" for b in self.bindings)


# ---- rendering ----
def load_template(name: str) -> str:
    return (_HERE / f"{name}.wgsl").read_text()


def render(template: str, subs: dict[str, str], slug: str = "") -> str:
    """Replace each ``{{NAME}}`` with ``subs[NAME]``; every token must be known, none left."""
    out = template
    for k, v in subs.items():
        token = "{{" + k + "}}"
        if token not in out:
            raise KeyError(f"{slug}: template has no {token}")
        out = out.replace(token, str(v))
    if "{{" in out:
        start = out.index("{{")
        raise KeyError(f"{slug}: unsubstituted token {out[start:out.index('}}', start) + 2]}")
    dump = os.environ.get("SHADERS_DUMP")
    if dump and slug:
        Path(dump).mkdir(parents=True, exist_ok=True)
        (Path(dump) / f"{slug}.wgsl").write_text(out)
    return out
