"""Model runtimes, chosen by the model file: ``.onnx`` (ONNX Runtime, CPU or CUDA),
``.pt`` (Ultralytics/PyTorch, CPU or CUDA), an OpenVINO IR folder (``*_openvino_model``
or any folder holding one ``.xml``), ``.engine`` (TensorRT).

Every backend takes the same letterboxed (n, 3, H, W) float32 batch and returns the
model's raw outputs (the head tensor, plus the mask prototypes of a segmentation
model), so pre- and post-processing (``stages.yolo``) are shared and every backend
yields the same detections type. Runtimes are imported only when a model is loaded:
a missing one fails with one line naming the package to install.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.errors import ModelFormatError
from stages.backends.base import ModelInfo, YoloBackend

__all__ = [
    "ModelInfo",
    "YoloBackend",
    "inference_streams",
    "load_backend",
    "model_format",
    "read_model_info",
    "threads_per_stream",
]

FORMATS = ".onnx, .pt, .engine, or an OpenVINO IR folder"
# Metadata already read by the supervisor, handed to the stage processes it starts
# (they inherit its environment). Without it every stage re-read the model while
# validating the config: for a .pt that meant importing PyTorch in all five
# processes at once, over 10 s before the first heartbeat on a 2-core box.
MODEL_INFO_ENV = "FRAMECHAIN_MODEL_INFO"


def model_format(path: Path) -> str:
    """``onnx``, ``pytorch``, ``openvino`` or ``tensorrt``, from the path alone."""
    if path.is_dir() or path.suffix == ".xml":
        return "openvino"
    formats = {".onnx": "onnx", ".pt": "pytorch", ".engine": "tensorrt"}
    if path.suffix in formats:
        return formats[path.suffix]
    raise ModelFormatError(
        f"{path.name}: unsupported model format {path.suffix or '(no suffix)'!r}; "
        f"use {FORMATS} (framechain export converts a .pt)"
    )


def read_model_info(path: Path) -> ModelInfo:
    """Class names, task, stride and fixed shapes from the model's own metadata,
    without building an inference session (config validation uses this). Read once
    per model file version and shared with child processes (``MODEL_INFO_ENV``)."""
    try:
        stat = path.stat()
    except OSError:
        return _read_model_info(path)  # the reader names the problem
    key = f"{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}"
    shared: Any = {}
    try:
        shared = json.loads(os.environ.get(MODEL_INFO_ENV, "{}"))
        fields = shared[key]
        return ModelInfo(
            **{
                **fields,
                "names": tuple(fields["names"]),
                "imgsz": tuple(fields["imgsz"]) if fields["imgsz"] else None,
            }
        )
    except (ValueError, TypeError, KeyError):
        pass  # not handed down (or not ours): read the file
    if not isinstance(shared, dict):
        shared = {}
    info = _read_model_info(path)
    shared[key] = asdict(info)
    os.environ[MODEL_INFO_ENV] = json.dumps(shared)
    return info


def _read_model_info(path: Path) -> ModelInfo:
    kind = model_format(path)
    if kind == "onnx":
        from stages.backends.onnx import read_onnx_info

        return read_onnx_info(path)
    if kind == "openvino":
        from stages.backends.openvino import read_openvino_info

        return read_openvino_info(path)
    if kind == "tensorrt":
        from stages.backends.tensorrt import read_engine_info

        return read_engine_info(path)
    from stages.backends.pytorch import read_pytorch_info

    return read_pytorch_info(path)


def inference_streams(
    path: Path, device: str, cameras: int, threads: int | None = None
) -> int:
    """How many inference calls a detector runs at once by default.

    ONNX Runtime on a CPU with 2+ threads serving 2+ cameras: two sessions, each on
    half the threads. One session's intra-op threads meet at a barrier after every
    operator, so on a box shared with decode and tracking processes one preempted
    thread stalls the rest; two sessions never wait for each other
    (docs/benchmarks.md §8). One camera: one session on all threads, because a
    live camera's frames come one after another (decode keeps few in flight to
    bound their age), and a second stream would only halve the threads each frame
    gets. GPU runtimes and OpenVINO (which schedules its own streams): one."""
    if cameras < 2 or (threads or os.cpu_count() or 1) < 2:
        return 1
    if model_format(path) != "onnx":
        return 1
    from stages.backends.onnx import uses_cpu

    return 2 if uses_cpu(device) else 1


def threads_per_stream(threads: int | None, streams: int) -> int:
    """Each stream's share of ``threads`` (default: all cores), at least one."""
    return max(1, (threads or os.cpu_count() or 1) // streams)


def load_backend(
    path: Path,
    imgsz: int,
    threads: int | None = None,
    device: str = "auto",
    half: bool = False,
) -> YoloBackend:
    """The backend for ``path``, loaded and ready for ``infer``.

    Args:
        imgsz: inference size (long side) for models with a dynamic input; models
            with a fixed input use their own.
        threads: CPU inference threads (default: all cores).
        device: ``auto`` (the GPU where the runtime has one), ``cpu`` or ``cuda``.
        half: fp16 inference where the backend and device support it.
    """
    kind = model_format(path)
    if kind == "onnx":
        from stages.backends.onnx import OnnxBackend

        return OnnxBackend(path, imgsz, threads, device)
    if kind == "openvino":
        from stages.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(path, imgsz, threads, device)
    if kind == "tensorrt":
        from stages.backends.tensorrt import TensorRtBackend

        return TensorRtBackend(path, imgsz, device)
    from stages.backends.pytorch import PyTorchBackend

    return PyTorchBackend(path, imgsz, threads, device, half)
