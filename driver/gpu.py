"""The small async GPU interface the engine is written against (both backends implement it).

Pure Python, no third-party import: it runs in CPython (``backend_wgpu``) and in Pyodide
(``backend_js``). Everything that waits on the GPU is ``async``; everything else is a plain call
that only enqueues work, as in WebGPU itself.

The per-token path is kept to three calls so that a browser backend can do it in one FFI crossing:
``write_buffer`` (the step's uniform bytes, ONE write), ``submit(program)`` (a dispatch list built
once at load time and replayed), and ``await map_read(...)`` (4 bytes: the sampled id).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from modelfmt import device

# Buffer kinds: what the buffer is used for decides its WebGPU usage flags (backend maps them).
STORAGE = "storage"    # STORAGE | COPY_SRC | COPY_DST: weights, activations, KV cache
UNIFORM = "uniform"    # UNIFORM | COPY_DST: per-dispatch params slices
READBACK = "readback"  # MAP_READ | COPY_DST: staging for reads of results
KINDS = (STORAGE, UNIFORM, READBACK)

UNIFORM_STRIDE = 256   # minUniformBufferOffsetAlignment default: one params slice per dispatch


class GPUError(RuntimeError):
    """Base of every GPU-side failure the engine reports. ``kind`` / ``hint``: the structured
    form the page gets (driver.backend_js.error_info)."""

    kind = "gpu"
    hint = "Reload the page; if it persists, update the graphics driver."


class WebGPUNotAvailable(GPUError):
    """No adapter at all (no WebGPU, no driver)."""

    kind = "no-webgpu"
    hint = "Use a browser with WebGPU (a recent Chrome or Edge) on a machine with a GPU driver."


class FeatureMissing(GPUError):
    kind = "capability"
    hint = "Use a smaller model or a GPU that has this feature."

    def __init__(self, feature: str, why: str = ""):
        super().__init__(f"the GPU adapter lacks the WebGPU feature {feature!r}"
                         + (f" ({why})" if why else ""))
        self.feature = feature


class LimitTooLow(GPUError):
    kind = "capability"
    hint = "Use a smaller model or a GPU with a higher limit."

    def __init__(self, name: str, need: int, have: int):
        super().__init__(f"the GPU adapter's limit {name} is {have}, the model needs {need}; "
                         "use a smaller model or a GPU with a higher limit")
        self.name, self.need, self.have = name, need, have


class ShaderError(GPUError):
    """A kernel failed to compile or validate; the message names the kernel slug."""

    kind = "shader"
    hint = "This GPU or browser rejected a kernel: please report it with the message."


@dataclass(frozen=True)
class Dispatch:
    pipeline: object          # backend pipeline handle
    bind_group: object        # backend bind-group handle
    grid: tuple[int, int, int]
    label: str = ""           # kernel slug (errors, profiles)


@dataclass(frozen=True)
class Copy:
    src: object
    src_offset: int
    dst: object
    dst_offset: int
    size: int


@dataclass
class Program:
    """A recorded command list: dispatches (one compute pass per run of them) and buffer copies.

    Built once at load time and replayed by ``submit``; a backend may cache whatever it derives
    from it (e.g. a JS array) on ``cache``: the recorder never changes a program once it has
    handed it out (a different tail makes a new Program).
    """

    ops: list = field(default_factory=list)   # [Dispatch | Copy]
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def dispatch(self, pipeline, bind_group, grid, label: str = "") -> None:
        gx, gy, gz = (tuple(grid) + (1, 1))[:3]
        if min(gx, gy, gz) < 1:
            raise ValueError(f"{label}: empty dispatch grid {grid}")
        self.ops.append(Dispatch(pipeline, bind_group, (int(gx), int(gy), int(gz)), label))

    def copy(self, src, src_offset: int, dst, dst_offset: int, size: int) -> None:
        if size % 4 or src_offset % 4 or dst_offset % 4:
            raise ValueError(f"copy offsets/size must be multiples of 4: {src_offset} {dst_offset} "
                             f"{size}")
        self.ops.append(Copy(src, src_offset, dst, dst_offset, size))

    def extend(self, other: "Program") -> None:
        self.ops.extend(other.ops)

    @property
    def n_dispatches(self) -> int:
        return sum(1 for op in self.ops if isinstance(op, Dispatch))


class GPU(ABC):
    """Interface only: both backends subclass it. Handles are opaque to the engine.

    Attributes a backend sets at creation: ``info`` (dict: name, vendor, backend, description),
    ``features`` (frozenset of WebGPU feature names enabled on the device), ``limits`` (dict of
    WebGPU limit names in snake_case -> int, as enabled on the device), ``caps`` (shaders.Caps).
    """

    info: dict
    features: frozenset
    limits: dict

    # ---- resources ----
    @abstractmethod
    def create_buffer(self, size: int, kind: str, label: str = ""):
        ...

    @abstractmethod
    def write_buffer(self, buf, offset: int, data) -> None:
        """Enqueue a write (ordered with submits on the queue); ``data`` is bytes-like."""
        ...

    @abstractmethod
    def create_pipeline(self, kernel):
        """Compile ``kernel`` (a shaders.Kernel); raise ShaderError naming its slug."""
        ...

    @abstractmethod
    def create_bind_group(self, pipeline, kernel, entries: dict):
        """``entries``: binding name -> (buffer, offset, size); every binding must be given."""
        ...

    # ---- work ----
    @abstractmethod
    def submit(self, program: Program) -> None:
        """Encode ``program`` in one command encoder and submit it (does not wait)."""
        ...

    @abstractmethod
    async def read(self, buf, offset: int, size: int) -> bytes:
        """Copy a STORAGE range to a staging buffer after all submitted work and return it."""
        ...

    @abstractmethod
    async def map_read(self, buf, offset: int, size: int) -> bytes:
        """Map a READBACK buffer that a submitted program copied into, return bytes, unmap."""
        ...

    @abstractmethod
    async def sync(self) -> None:
        """Wait until all submitted work is done."""
        ...

    def destroy(self) -> None:
        pass

    # ---- helpers shared by backends ----
    @staticmethod
    def bind_entries(kernel, entries: dict) -> list[tuple]:
        """(buffer, offset, size) per binding of ``kernel`` in binding order; ValueError naming
        the kernel when ``entries`` lacks a binding or has one the kernel does not declare."""
        names = [b.name for b in kernel.bindings]
        missing = [n for n in names if n not in entries]
        extra = [n for n in entries if n not in names]
        if missing or extra:
            raise ValueError(f"{kernel.slug}: bind group missing {missing}, unexpected {extra}")
        return [(entries[n][0], int(entries[n][1]), int(entries[n][2])) for n in names]

    def check_requirements(self, requirements: dict) -> None:
        """Raise FeatureMissing / LimitTooLow when the device cannot run a manifest's model
        (``modelfmt.device.unmet``: the same rules as the page's check)."""
        for miss in device.unmet(requirements, self.limits, self.features):
            if miss[0] == "feature":
                raise FeatureMissing(miss[1], "required by the model manifest")
            raise LimitTooLow(miss[1], miss[3], miss[4])


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown buffer kind {kind!r}; expected one of {KINDS}")
