"""ONNX Runtime: the default CPU path (and CUDA with onnxruntime-gpu)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import BackendUnavailableError, ModelFormatError
from stages.detect.backends.base import ModelInfo, YoloBackend


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailableError(
            "onnxruntime is not installed; pip install onnxruntime (CPU) or "
            "onnxruntime-gpu (CUDA)"
        ) from e
    return ort


def _providers(ort: Any, device: str) -> list[str]:
    """Execution providers for ``device``: cpu, cuda, or auto (CUDA when the
    installed onnxruntime has it, e.g. onnxruntime-gpu in the CUDA image)."""
    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise BackendUnavailableError(
            "detector.device is cuda but this onnxruntime has no CUDA provider; "
            "pip install onnxruntime-gpu (and the CUDA 12 runtime), or use device: cpu"
        )
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def uses_cpu(device: str) -> bool:
    """Whether a session for ``device`` would run on the CPU provider."""
    return _providers(_import_ort(), device)[0] == "CPUExecutionProvider"


def _session(path: Path, threads: int, build: bool, device: str) -> Any:
    ort = _import_ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if os.environ.get("FRAMECHAIN_ORT_SPIN") == "0":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not build:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(
            str(path), options, providers=_providers(ort, device)
        )
    except Exception as e:  # ORT raises its own untyped errors for bad files
        raise ModelFormatError(
            f"{path.name} is not a loadable ONNX model "
            f"({str(e).splitlines()[0][:200]}); "
            "re-export it or check the file is complete"
        ) from e


def _info(session: Any, path: Path) -> ModelInfo:
    """Metadata, with the fixed/dynamic input read from the graph itself (it is what
    the runtime will accept, whatever the export arguments said)."""
    info = ModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map, path)
    batch, _, height, width = session.get_inputs()[0].shape
    fixed = isinstance(height, int) and isinstance(width, int)
    return replace(
        info,
        imgsz=(int(height), int(width)) if fixed else None,
        batch=int(batch) if isinstance(batch, int) else None,
    )


def read_onnx_info(path: Path) -> ModelInfo:
    return _info(_session(path, 1, build=False, device="cpu"), path)


class OnnxBackend(YoloBackend):
    """An Ultralytics YOLO export on ONNX Runtime."""

    def __init__(
        self, path: Path, imgsz: int, threads: int | None = None, device: str = "auto"
    ) -> None:
        self.threads = threads or os.cpu_count() or 1
        self.session = _session(path, self.threads, build=True, device=device)
        super().__init__(path, _info(self.session, path), imgsz)
        self.runtime = f"onnxruntime {self.session.get_providers()[0]}"
        self.input_name = self.session.get_inputs()[0].name

    def _run(self, tensor: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        return self.session.run(None, {self.input_name: tensor})
