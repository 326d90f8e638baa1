"""Device selection: CUDA when available, else CPU; always overridable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from gazeprep.errors import GazeprepError

if TYPE_CHECKING:
    import torch

DeviceChoice = Literal["auto", "cpu", "cuda"]


def resolve_device(choice: str = "auto") -> torch.device:
    """Return a ``torch.device`` for ``choice`` in {"auto", "cpu", "cuda", "cuda:N"}.

    ``auto`` picks CUDA when ``torch.cuda.is_available()``, else CPU. Asking for CUDA on a machine
    without it is a :class:`GazeprepError`, not a silent fallback.
    """
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GazeprepError(f"--device {choice} was requested but CUDA is not available")
        return torch.device(choice)
    raise GazeprepError(f"unknown device {choice!r}; use auto, cpu or cuda")
