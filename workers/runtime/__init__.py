"""The worker runtime: the job loop, job executors, device choice and clean shutdown."""

from .device import DeviceError, resolve_device
from .executors import JobExecutor
from .launch import WorkerSetupError, run_worker
from .monitor import JobInterrupted, JobMonitor
from .worker import Worker, WorkerOptions, default_worker_id, describe_failure

__all__ = [
    "DeviceError",
    "JobExecutor",
    "JobInterrupted",
    "JobMonitor",
    "Worker",
    "WorkerOptions",
    "WorkerSetupError",
    "default_worker_id",
    "describe_failure",
    "resolve_device",
    "run_worker",
]
