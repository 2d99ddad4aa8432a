"""Moving host tensors to the training device without waiting for it."""

from __future__ import annotations

import torch


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (on the host) on ``device``, queued like a kernel: a plain copy from pageable
    memory to a GPU synchronises the stream, one from pinned memory does not (the host goes on
    preparing the next work while the copy waits for the kernels before it)."""
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
