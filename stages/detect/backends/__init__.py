"""Model runtimes, chosen by the model file: ``.onnx`` (ONNX Runtime, CPU or CUDA),
``.pt`` (Ultralytics/PyTorch, CPU or CUDA), an OpenVINO IR folder (``*_openvino_model``
or any folder holding one ``.xml``), ``.engine`` (TensorRT).

Every backend takes the same letterboxed (n, 3, H, W) float32 batch and returns the
model's raw outputs (the head tensor, plus the mask prototypes of a segmentation
model), so pre- and post-processing (``stages.detect.yolo``) are shared and every
backend yields the same detections type. Runtimes are imported only when a model is
loaded: a missing one fails with one line naming the package to install.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.errors import ModelFormatError
from stages.detect.backends.base import ModelInfo, YoloBackend

__all__ = [
    "DEFAULT_MAX_BATCH",
    "ModelInfo",
    "YoloBackend",
    "inference_batch",
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
DEFAULT_MAX_BATCH = 4  # frames per inference call where no runtime rule applies


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
        from stages.detect.backends.onnx import read_onnx_info

        return read_onnx_info(path)
    if kind == "openvino":
        from stages.detect.backends.openvino import read_openvino_info

        return read_openvino_info(path)
    if kind == "tensorrt":
        from stages.detect.backends.tensorrt import read_engine_info

        return read_engine_info(path)
    from stages.detect.backends.pytorch import read_pytorch_info

    return read_pytorch_info(path)


def inference_streams(path: Path, device: str, threads: int | None = None) -> int:
    """How many inference calls a detector runs at once by default.

    ONNX Runtime on a CPU with 2+ threads: two sessions, each on half the threads.
    One session's intra-op threads meet at a barrier after every operator, so on a
    box shared with decode and tracking processes one preempted thread stalls the
    other (and spins while it waits); two sessions never wait for each other. On the
    2-core reference box the best of two single-thread sessions ran the model 17-23 %
    faster than the best of one two-thread session (six runs), and took one camera
    through the chain from 0.69 to 0.85 of that limit (docs/benchmarks.md §8, §9).
    GPU runtimes and OpenVINO (which schedules its own streams): one."""
    if (threads or os.cpu_count() or 1) < 2:
        return 1
    return 2 if _onnx_on_cpu(path, device) else 1


def inference_batch(path: Path, device: str, streams: int) -> int:
    """Frames per inference call by default: 1 when several ONNX Runtime sessions
    share a CPU, 4 elsewhere. On a CPU a batch saves nothing per image (the runtime's
    per-call cost is tiny) while a larger batch's activations fall out of the core's
    cache: on the 2-core reference box two single-thread sessions ran the chain
    faster at batch 1 than at 2 in five of six paired runs (one camera) and than at 2
    or 8 in every paired run with eight cameras (docs/benchmarks.md §10). GPUs gain
    from larger batches."""
    return 1 if streams > 1 and _onnx_on_cpu(path, device) else DEFAULT_MAX_BATCH


def _onnx_on_cpu(path: Path, device: str) -> bool:
    """Whether ``path`` runs on ONNX Runtime's CPU provider for ``device``."""
    if model_format(path) != "onnx":
        return False
    from stages.detect.backends.onnx import uses_cpu

    return uses_cpu(device)


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
        from stages.detect.backends.onnx import OnnxBackend

        return OnnxBackend(path, imgsz, threads, device)
    if kind == "openvino":
        from stages.detect.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(path, imgsz, threads, device)
    if kind == "tensorrt":
        from stages.detect.backends.tensorrt import TensorRtBackend

        return TensorRtBackend(path, imgsz, device)
    from stages.detect.backends.pytorch import PyTorchBackend

    return PyTorchBackend(path, imgsz, threads, device, half)
