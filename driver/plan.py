"""Program building: kernels, pipelines, bind groups and per-dispatch uniform slices, made once.

Pure Python (runs in Pyodide). A ``Recorder`` collects ``Step``s (one kernel dispatch each, or a
buffer copy); ``Recorder.program(runtime)`` gives the ``gpu.Program`` to submit and
``Recorder.uniforms(runtime)`` the ONE byte string to write into this recorder's region of the
shared uniform buffer. Static param values are packed once; the per-step ones (``pos``, ``ctx``,
``n_tok``, sampling values) are patched into a template by byte offset, so a decode step costs a
few dozen ``bytes`` slice assignments, not one ``struct.pack`` per dispatch.
"""

from __future__ import annotations

import struct

from . import gpu as g

_CODES = {"u32": "<I", "i32": "<i", "f32": "<f"}


class Dyn:
    """A param value (or grid argument) taken from the runtime dict at step time."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f"Dyn({self.name!r})"


class Span:
    """A step that runs only while ``lo <= rt[name] <= hi``: the decode program records the
    short-context attention (one pass) and the long-context one (split-K + combine) and each
    step replays the one its ``ctx`` selects. Equal spans are one condition (``key``)."""

    __slots__ = ("name", "lo", "hi")

    def __init__(self, name: str, lo: int = 0, hi: int = 1 << 62):
        self.name, self.lo, self.hi = name, lo, hi

    @property
    def key(self) -> tuple:
        return (self.name, self.lo, self.hi)

    def __call__(self, rt: dict) -> bool:
        return self.lo <= rt[self.name] <= self.hi

    def __repr__(self):
        return f"Span({self.name!r}, {self.lo}, {self.hi})"


class PipelineCache:
    """Pipelines by kernel slug: every kernel is compiled once per device."""

    def __init__(self, gpu: g.GPU):
        self.gpu = gpu
        self._pipes: dict[str, object] = {}

    def get(self, kernel):
        p = self._pipes.get(kernel.slug)
        if p is None:
            p = self.gpu.create_pipeline(kernel)
            self._pipes[kernel.slug] = p
        return p

    def __len__(self):
        return len(self._pipes)


class _DispatchStep:
    __slots__ = ("kernel", "pipeline", "bind_group", "grid_args", "grid_static", "when")

    def __init__(self, kernel, pipeline, bind_group, grid_args: dict, when: Span | None = None):
        self.kernel, self.pipeline, self.bind_group = kernel, pipeline, bind_group
        self.when = when   # None: always part of the program
        # only the runtime values the kernel's grid reads (Grid.args) matter
        self.grid_args = {a: grid_args[a] for a in kernel.grid.args if a in grid_args}
        dyn = any(isinstance(v, Dyn) for v in self.grid_args.values())
        self.grid_static = None if dyn else kernel.grid(**self.grid_args)

    def grid(self, rt: dict):
        if self.grid_static is not None:
            return self.grid_static
        return self.kernel.grid(**{k: (rt[v.name] if isinstance(v, Dyn) else v)
                                   for k, v in self.grid_args.items()})


class Recorder:
    """The steps of one program and its slices of the uniform buffer.

    ``ubuf`` is the shared UNIFORM buffer; this recorder owns slices ``base_slot ..`` of it
    (``gpu.UNIFORM_STRIDE`` bytes each), one per dispatch that has params.
    """

    def __init__(self, gpu: g.GPU, pipes: PipelineCache, ubuf, base_slot: int, max_slots: int,
                 name: str):
        self.gpu, self.pipes, self.ubuf, self.name = gpu, pipes, ubuf, name
        self.base_slot, self.max_slots = base_slot, max_slots
        self.steps: list = []
        self.n_slots = 0
        self._template = bytearray()
        self._patches: dict[tuple[str, str], list[int]] = {}  # (runtime name, code) -> offsets
        self._programs: dict[tuple, g.Program] = {}
        self._grid_groups: list | None = None   # steps with runtime grids, one per distinct grid
        self._spans: list | None = None         # the distinct Span conditions of the steps

    # ---- recording ----
    def dispatch(self, kernel, buffers: dict, params: dict | None = None,
                 grid: dict | None = None, when: Span | None = None) -> None:
        """``buffers``: binding name -> (buffer, offset, size); ``params``: field -> value or
        Dyn; ``grid``: runtime values of ``kernel.grid`` (values or Dyn; it reads its ``args``);
        ``when``: the step is in the program only for runtimes inside that Span."""
        entries = dict(buffers)
        if kernel.params is not None:
            if self.n_slots >= self.max_slots:
                raise RuntimeError(f"{self.name}: more than {self.max_slots} uniform slices")
            slot = self.base_slot + self.n_slots
            self.n_slots += 1
            entries["params"] = (self.ubuf, slot * g.UNIFORM_STRIDE, kernel.params.nbytes)
            self._add_params(kernel, params or {})
        pipe = self.pipes.get(kernel)
        bg = self.gpu.create_bind_group(pipe, kernel, entries)
        self.steps.append(_DispatchStep(kernel, pipe, bg, dict(grid or {}), when))
        self._grid_groups = self._spans = None

    def _add_params(self, kernel, params: dict) -> None:
        fields = kernel.params.fields
        names = [n for n, _ in fields]
        missing = [n for n in names if n not in params]
        extra = [n for n in params if n not in names]
        if missing or extra:
            raise ValueError(f"{kernel.slug}: params missing {missing}, unexpected {extra}")
        base = len(self._template)
        static = {n: (0 if isinstance(params[n], Dyn) else params[n]) for n in names}
        blob = kernel.params.pack(**static)
        self._template += blob + b"\0" * (g.UNIFORM_STRIDE - len(blob))
        for i, (n, t) in enumerate(fields):
            v = params[n]
            if isinstance(v, Dyn):
                self._patches.setdefault((v.name, _CODES[t]), []).append(base + 4 * i)

    def copy(self, src, src_off: int, dst, dst_off: int, size: int) -> None:
        self.steps.append(g.Copy(src, src_off, dst, dst_off, size))

    # ---- replay ----
    @property
    def n_dispatches(self) -> int:
        """Dispatch steps recorded (a Span-conditioned step counts even where it does not run:
        ``dispatches(rt)`` is what one program replays)."""
        return sum(1 for s in self.steps if isinstance(s, _DispatchStep))

    def dispatches(self, rt: dict) -> int:
        """Dispatches of the program replayed at runtime ``rt``."""
        return self.program(rt).n_dispatches

    def uniforms(self, rt: dict) -> bytes:
        """This recorder's uniform bytes for runtime values ``rt`` (write at ``uniform_offset``)."""
        blob = bytearray(self._template)
        for (name, code), offs in self._patches.items():
            word = struct.pack(code, rt[name])
            for o in offs:
                blob[o:o + 4] = word
        return bytes(blob)

    @property
    def uniform_offset(self) -> int:
        return self.base_slot * g.UNIFORM_STRIDE

    def write_uniforms(self, rt: dict) -> None:
        if self.n_slots:
            self.gpu.write_buffer(self.ubuf, self.uniform_offset, self.uniforms(rt))

    def _grids(self, rt: dict) -> tuple:
        """What the program depends on at runtime ``rt``: the outcome of each distinct Span, then
        the runtime-dependent grids, each distinct (kernel, grid args) computed once (a decode
        step has one per layer of the same attention kernel, all equal)."""
        groups, spans = self._grid_groups, self._spans
        if groups is None or spans is None:
            seen: dict = {}
            conds: dict = {}
            for s in self.steps:
                if not isinstance(s, _DispatchStep):
                    continue
                if s.when is not None:
                    conds.setdefault(s.when.key, s.when)
                if s.grid_static is None:
                    key = (id(s.kernel), tuple(sorted((k, v.name if isinstance(v, Dyn) else v)
                                                      for k, v in s.grid_args.items())))
                    seen.setdefault(key, s)
            groups = self._grid_groups = list(seen.values())
            spans = self._spans = list(conds.values())
        on = tuple(sp(rt) for sp in spans)
        # a step outside its span is not replayed: its grid is not asked for (0 stands in)
        return on + tuple(s.grid(rt) if s.when is None or s.when(rt) else 0 for s in groups)

    def program(self, rt: dict, tail: list[g.Copy] | None = None,
                cache_tail: bool = True) -> g.Program:
        """The Program for runtime ``rt`` (cached by the grids that depend on it) + ``tail``, a
        list of ``gpu.Copy`` run after it. ``cache_tail=False`` for tails that change every step:
        the Program is then the cached body's ops plus the copies."""
        grids = self._grids(rt)
        body = self._programs.get(grids)
        if body is None:
            body = g.Program()
            for s in self.steps:
                if isinstance(s, _DispatchStep):
                    if s.when is None or s.when(rt):
                        body.dispatch(s.pipeline, s.bind_group, s.grid(rt), s.kernel.slug)
                else:
                    body.copy(s.src, s.src_offset, s.dst, s.dst_offset, s.size)
            if len(self._programs) > 256:
                self._programs.clear()
            self._programs[grids] = body
        if not tail:
            return body
        key = (grids, tuple((id(c.src), c.src_offset, id(c.dst), c.dst_offset, c.size)
                            for c in tail))
        prog = self._programs.get(key) if cache_tail else None
        if prog is None:
            prog = g.Program(ops=list(body.ops))
            for c in tail:
                prog.copy(c.src, c.src_offset, c.dst, c.dst_offset, c.size)
            if cache_tail:
                self._programs[key] = prog
        return prog

    def run(self, rt: dict, tail: list[g.Copy] | None = None, cache_tail: bool = True) -> None:
        """One uniform write + one submit."""
        self.write_uniforms(rt)
        self.gpu.submit(self.program(rt, tail, cache_tail))
