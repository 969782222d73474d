"""The one error type of weights_tool: a bad input or a failed write, told in one line.

``PackError(file, problem, hint)`` renders as ``<file>: <problem>. <hint>``; the CLI prints it as
``error: ...`` with exit code 2 and no traceback. Every loader (HF safetensors, GGUF) raises it for
anything wrong with the user's files, so that no other exception type escapes on bad input.
"""

from __future__ import annotations

import os


class PackError(Exception):
    """A problem with an input or output file that the user can fix."""

    def __init__(self, file: str | os.PathLike, problem: str, hint: str = "") -> None:
        self.file = str(file)
        self.problem = problem.rstrip(". ")
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        msg = f"{self.file}: {self.problem}."
        if self.hint:
            msg += " " + self.hint.rstrip(".") + "."
        return msg.replace("\n", " ")
