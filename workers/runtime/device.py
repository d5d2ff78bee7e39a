"""Which torch device a worker runs on: ``cpu``, ``cuda``/``cuda:N``, or ``auto``.

``auto`` picks the CUDA device with the most free memory (several workers started on one
machine thus spread over its GPUs), else the CPU. An explicit device that does not exist is
an error at start-up, not a failure of every job later.
"""

from __future__ import annotations

import re

_CUDA = re.compile(r"^cuda(?::(\d+))?$")


class DeviceError(ValueError):
    """A device string that is malformed or names a device this machine lacks."""


def resolve_device(spec: str) -> str:
    """The concrete device (``cpu`` or ``cuda:N``) for ``spec``."""
    import torch

    spec = spec.strip().lower()
    if spec == "cpu":
        return "cpu"
    if spec == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        free = [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
        return f"cuda:{max(range(len(free)), key=free.__getitem__)}"
    match = _CUDA.match(spec)
    if match is None:
        raise DeviceError(f"device {spec!r} is not auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} asked for, but CUDA is not available here")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(
            f"device {spec!r} asked for, but this machine has {torch.cuda.device_count()} "
            "CUDA device(s)"
        )
    return f"cuda:{index}"
