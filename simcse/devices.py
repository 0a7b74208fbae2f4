"""Which device the encoder runs on and in which reduced precision.

One place for the choices every caller makes the same way: CUDA when present, else the CPU; bf16 autocast
where the GPU supports it (fp16 on older GPUs when encoding), full fp32 on the CPU.
"""

from __future__ import annotations

import torch


def auto_device(device: str | None = None) -> torch.device:
    """`device` if given, else CUDA when present, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision used on this device (bf16 where supported, else fp16 on CUDA; none on CPU)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def training_uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether training autocasts to bf16: `precision` "bf16" or "fp32" says so; "auto" where CUDA supports it."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    return device.type == "cuda" and torch.cuda.is_bf16_supported()
