"""TensorRT engines through the TensorRT Python API directly (no PyTorch): dynamic
batch within the engine's optimisation profile, fp16/int8 engines, pinned host buffers
and one CUDA stream, so host-device copies overlap nothing else and never page.
Runs wherever TensorRT and cuda-python do, Jetson included.

Engines written by Ultralytics (and ``framechain export``) start with their metadata:
a little-endian int32 length, then that many bytes of JSON. An engine built for
another GPU or TensorRT version does not deserialize; that is reported as such, with
the fix (rebuild it through the engine cache), never loaded half-way.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import BackendUnavailableError, ModelFormatError
from stages.detect.backends.base import ModelInfo, YoloBackend

INSTALL = (
    "pip install tensorrt-cu12 cuda-python (x86_64), "
    "or use JetPack's TensorRT on Jetson"
)


def split_engine_file(data: bytes, name: str) -> tuple[dict[str, Any], bytes]:
    """(metadata, serialized engine) of an Ultralytics-style engine file."""
    if len(data) < 4:
        raise ModelFormatError(f"{name}: truncated engine file ({len(data)} bytes)")
    length = int.from_bytes(data[:4], "little", signed=True)
    if not 0 < length < min(len(data), 1 << 24):
        raise ModelFormatError(
            f"{name}: no Ultralytics metadata header; build engines with "
            "`framechain export --format engine` so class names travel with them"
        )
    try:
        meta = json.loads(data[4 : 4 + length].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{name}: corrupt engine metadata ({e})") from e
    return meta, data[4 + length :]


def read_engine_info(path: Path) -> ModelInfo:
    with path.open("rb") as f:
        head = f.read(4)
        length = int.from_bytes(head, "little", signed=True) if len(head) == 4 else 0
        meta, _ = split_engine_file(
            head + f.read(max(0, min(length, 1 << 24))), path.name
        )
    return ModelInfo.from_metadata(meta, path)


def _imports() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(f"TensorRT is not installed; {INSTALL}") from e
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as e:
            raise BackendUnavailableError(
                f"cuda-python is not installed (TensorRT's buffers need it); {INSTALL}"
            ) from e
    return trt, cudart


def _check(result: Any) -> Any:
    """cuda-python returns (error, *values); raise on an error, return the values."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise RuntimeError(f"CUDA error {error}")
    return values[0] if len(values) == 1 else values


class _Buffer:
    """One engine tensor: device memory and a pinned host mirror, sized for the
    largest shape the engine's profile admits."""

    def __init__(self, cudart: Any, nbytes: int, dtype: np.dtype[Any]) -> None:
        self.cudart = cudart
        self.nbytes = nbytes
        self.dtype = dtype
        self.device = _check(cudart.cudaMalloc(nbytes))
        self.host_ptr = _check(cudart.cudaMallocHost(nbytes))
        raw = (ctypes.c_uint8 * nbytes).from_address(int(self.host_ptr))
        self.host = np.frombuffer(memoryview(raw), np.uint8)

    def view(self, shape: tuple[int, ...]) -> npt.NDArray[Any]:
        count = int(np.prod(shape))
        return self.host[: count * self.dtype.itemsize].view(self.dtype).reshape(shape)

    def free(self) -> None:
        self.cudart.cudaFree(self.device)
        self.cudart.cudaFreeHost(self.host_ptr)


class TensorRtBackend(YoloBackend):
    """A serialized TensorRT engine on the current CUDA device."""

    def __init__(self, path: Path, imgsz: int, device: str = "auto") -> None:
        if device == "cpu":
            raise ModelFormatError(
                f"{path.name} is a TensorRT engine, which runs on NVIDIA GPUs only; "
                "use device: auto or cuda, or an .onnx model on CPU"
            )
        trt, self.cudart = _imports()
        meta, blob = split_engine_file(path.read_bytes(), path.name)
        info = ModelInfo.from_metadata(meta, path)
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise ModelFormatError(
                f"{path.name} does not deserialize on this GPU with TensorRT "
                f"{trt.__version__} (built elsewhere, or corrupt); rebuild it with "
                "`framechain export --format engine` or detector.compile: engine"
            )
        self.context = self.engine.create_execution_context()
        names = [
            self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)
        ]
        self.input = next(
            n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
        )
        self.outputs = [n for n in names if n != self.input]
        shape = tuple(self.engine.get_tensor_shape(self.input))
        largest = shape
        if -1 in shape:  # dynamic: the profile's largest shape bounds every batch
            largest = tuple(self.engine.get_tensor_profile_shape(self.input, 0)[2])
        info = replace(
            info,
            imgsz=None if -1 in shape[2:] else (int(shape[2]), int(shape[3])),
            batch=int(largest[0]),
        )
        super().__init__(path, info, imgsz)
        self.context.set_input_shape(self.input, largest)
        self.stream = _check(self.cudart.cudaStreamCreate())
        self.buffers: dict[str, _Buffer] = {}
        for name in names:
            dims = tuple(
                largest if name == self.input else self.context.get_tensor_shape(name)
            )
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            self.buffers[name] = _Buffer(
                self.cudart, int(np.prod(dims)) * dtype.itemsize, dtype
            )
            self.context.set_tensor_address(name, int(self.buffers[name].device))
        # head first, then prototypes: order outputs by rank (3-d head, 4-d protos)
        self.outputs.sort(key=lambda n: len(self.context.get_tensor_shape(n)))
        self.runtime = f"TensorRT {trt.__version__}"

    def _run(self, tensor: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        cudart, kind = self.cudart, self.cudart.cudaMemcpyKind
        self.context.set_input_shape(self.input, tensor.shape)
        source = self.buffers[self.input]
        staged = source.view(tensor.shape)
        staged[...] = tensor  # casts to fp16 when the engine's input is fp16
        _check(
            cudart.cudaMemcpyAsync(
                source.device,
                source.host_ptr,
                staged.nbytes,
                kind.cudaMemcpyHostToDevice,
                self.stream,
            )
        )
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError(f"{self.path.name}: TensorRT execution failed")
        views = []
        for name in self.outputs:
            buffer = self.buffers[name]
            view = buffer.view(tuple(self.context.get_tensor_shape(name)))
            _check(
                cudart.cudaMemcpyAsync(
                    buffer.host_ptr,
                    buffer.device,
                    view.nbytes,
                    kind.cudaMemcpyDeviceToHost,
                    self.stream,
                )
            )
            views.append(view)
        _check(cudart.cudaStreamSynchronize(self.stream))
        return [view.astype(np.float32) for view in views]

    def close(self) -> None:
        for buffer in self.buffers.values():
            buffer.free()
        self.cudart.cudaStreamDestroy(self.stream)
