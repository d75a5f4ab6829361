"""Where models run: device choice, mixed precision and DataLoader settings.

Training and serving code asks this module instead of testing
``torch.cuda.is_available()`` itself, so a CPU-only machine and a GPU box run
the same code path.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU. ``"cpu"``, ``"cuda"``, ``"cuda:N"``.

    Asking for CUDA on a machine without it raises instead of silently training
    on the CPU for hours.
    """
    choice = (prefer or "auto").strip().lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" or choice.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {prefer!r} requested but CUDA is not available")
        return torch.device(choice)
    raise ValueError(f"unknown device {prefer!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA (no loss scaler needed, unlike fp16); a no-op elsewhere.

    CPU autocast is left off: on most CPUs bf16 matmuls are slower than fp32.
    """
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loader_kwargs(device: torch.device) -> dict[str, Any]:
    """Extra ``DataLoader`` kwargs: pinned host memory speeds host->GPU copies."""
    return {"pin_memory": device.type == "cuda"}
