"""Op registry: op name -> kernel builder, and op name -> check cases.

Pure Python, no third-party import (runs in Pyodide). Each op module registers

    @register("matvec")
    def build(caps: Caps, **dims) -> Kernel: ...      # picks the variant for these caps, renders it

    @register_cases("matvec")
    def cases(quick: bool) -> list[Case]: ...         # numpy-checked cases (numpy imported lazily)

``kernel(op, caps, **dims)`` is the one entry point the driver uses; results are cached by
(op, caps, dims) so a kernel is rendered once per process.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from .core import Caps, Kernel, UnsupportedKernel

_BUILDERS: dict[str, Callable[..., Kernel]] = {}
_CASES: dict[str, list[Callable[[bool], list]]] = {}
_CACHE: dict[tuple, Kernel] = {}
COVERED_BY: dict[str, str] = {}   # helper op -> the op whose cases run it


# ---- kernel builders ----
def register(op: str):
    """Decorator: ``builder(caps, **dims) -> Kernel`` becomes the builder of ``op``."""
    def deco(fn):
        if op in _BUILDERS and _BUILDERS[op] is not fn:
            raise ValueError(f"op {op!r} is registered twice")
        _BUILDERS[op] = fn
        return fn
    return deco


def kernel(op: str, caps: Caps, **dims) -> Kernel:
    """The kernel of ``op`` for these GPU caps and model dims (ints/strs), rendered once and cached.

    Raises ``UnsupportedKernel`` (naming the op and the reason) for an unknown op, a combination
    no variant supports, or a kernel binding more storage buffers than ``caps.max_storage_buffers``."""
    k = _build(op, caps, dims)
    # checked here, for every op: a layout over the limit would only fail at pipeline creation
    if k.storage_buffers > caps.max_storage_buffers:
        hint = " (split it: shaders.qkv_split)" if op == "qkv_rope_decode" else ""
        raise UnsupportedKernel(f"{op}: {k.slug} binds {k.storage_buffers} storage buffers, this "
                                f"GPU allows {caps.max_storage_buffers} per shader stage "
                                f"(maxStorageBuffersPerShaderStage){hint}")
    return k


def _build(op: str, caps: Caps, dims: dict) -> Kernel:
    if op not in _BUILDERS:
        raise UnsupportedKernel(f"unknown op {op!r}; known: {', '.join(all_ops())}")
    ck = (op, caps, tuple(sorted(dims.items())))
    k = _CACHE.get(ck)
    if k is None:
        k = _BUILDERS[op](caps, **dims)
        _CACHE[ck] = k
    return k


def fits(op: str, caps: Caps, **dims) -> bool:
    """Whether ``kernel(op, caps, **dims)`` exists on ``caps``: a variant for these dims, within
    the storage-buffer limit. The driver asks before choosing between a fused kernel and its
    unfused fallback (an unknown op is still an error)."""
    if op not in _BUILDERS:
        raise UnsupportedKernel(f"unknown op {op!r}; known: {', '.join(all_ops())}")
    try:
        return _build(op, caps, dims).storage_buffers <= caps.max_storage_buffers
    except UnsupportedKernel:
        return False


def all_ops() -> list[str]:
    """Names of every registered op, sorted."""
    return sorted(_BUILDERS)


def variant_caps(caps: Caps) -> list[Caps]:
    """``caps`` and its restrictions (no shader-f16, no subgroups, neither; no packed dot): the check runs the
    kernel chosen for each, so the fallback is exercised even on a GPU that has every feature."""
    out = []
    for f16 in (caps.shader_f16, False):
        for sg in (caps.subgroups, False):
            c = replace(caps, shader_f16=f16, subgroups=sg)
            if c not in out:
                out.append(c)
    # and without packed_4x8_integer_dot_product (kernels that use it fall back to f32 unpacking;
    # the others render the same slug and are not run twice)
    if caps.packed_dot:
        out.append(replace(caps, packed_dot=False))
    # and without subgroup matrices (the prefill matmuls' FMA tiles, next to their matrix-unit tiles)
    if caps.subgroup_matrix:
        out.append(replace(caps, subgroup_matrix=()))
    return out


# ---- check cases ----
@dataclass
class Case:
    """One numpy-checked run of an op.

    ``make_inputs(rng)`` returns a dict with
      "buffers": {binding name: np.ndarray | bytes | int (byte size of a zeroed output)},
      "params":  {field: value} for the kernel's uniform (may be omitted when it has none),
      "grid":    {runtime: value} passed to ``kernel.grid(**grid)`` (may be omitted),
    and anything else the reference needs. ``reference(inputs)`` returns {output binding name:
    expected np.ndarray}; the GPU output is viewed with the expected array's dtype and shape.
    ``tol`` is a key of ``shaders.tolerances.TOL``. ``steps``, when given, replaces the single
    dispatch: ``steps(caps, inputs) -> [(Kernel, params dict, grid tuple), ...]`` run in order on
    the same named buffers (for ops that need several dispatches, e.g. split-K + combine).
    """

    op: str
    dims: dict
    make_inputs: Callable
    reference: Callable
    tol: str
    label: str = ""
    steps: Callable | None = None
    tol_f16: str = ""   # tolerance key for variants using shader-f16 arithmetic (default: tol)
    extra: dict = field(default_factory=dict)

    def shape(self) -> str:
        return self.label or ",".join(f"{k}={v}" for k, v in self.dims.items())


def register_cases(op: str, covers: tuple[str, ...] = ()):
    """Decorator: ``fn(quick: bool) -> list[Case]`` declares check cases of ``op``. ``covers``
    names helper ops these cases also run (through ``Case.steps``, e.g. a split-K combine), which
    then need no cases of their own."""
    def deco(fn):
        for other in covers:
            COVERED_BY[other] = op
        _CASES.setdefault(op, [])
        if fn not in _CASES[op]:
            _CASES[op].append(fn)
        return fn
    return deco


def cases(quick: bool, ops=None) -> list[Case]:
    """Every registered case (of ``ops`` when given), in op order."""
    out = []
    for op in sorted(_CASES):
        if ops and op not in ops:
            continue
        for fn in _CASES[op]:
            out.extend(fn(quick))
    return out


def case_ops() -> list[str]:
    return sorted(_CASES)
