"""Stand-in for ``wandb`` on GPU machines that lack it (benchmarks/gpu_check.sh only).

sae_lens imports wandb at module level for its training configs; a sweep never calls it. The
real wheel (20 MB plus a dozen telemetry packages) does not fit the device tool's 64 MiB
transfer, so gpu_check.sh puts this folder on the path only when ``import wandb`` fails there.
Any use of it raises, so nothing can silently depend on it.
"""

from typing import Any


class _Unavailable:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("wandb is not installed on this machine (benchmarks/gpu_env stand-in)")


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return _Unavailable
