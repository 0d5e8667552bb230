"""Each stage process loads only what its kind needs: a capture process holds
packets and never loads ONNX Runtime, OpenCV, supervision or the detector's code;
decode, track and the sink load no inference runtime. Checked on real ``framechain
stage`` processes, from Python's own record of every import they made
(``PYTHONPROFILEIMPORTTIME``) up to the moment they report running."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import zmq
from conftest import ASSETS, CROWD_LINE, REPO, camera_config, chain_env, write_config

from framechain.app import stage_command
from pipeline.messages import Heartbeat
from pipeline.transport import Endpoint, LinkOptions, make_socket, receive
from stages.detect.backends import MODEL_INFO_ENV, read_model_info

RUNTIMES = {"onnxruntime", "torch", "openvino", "tensorrt", "ultralytics", "scipy"}
DETECTOR_CODE = {
    "stages.detect.stage",
    "stages.detect.yolo",
    "stages.detect.backends.onnx",
    "stages.detect.classify",
}
# module roots each kind must not import (its job needs none of them)
FORBIDDEN = {
    "capture.cam": RUNTIMES
    | DETECTOR_CODE
    | {"cv2", "supervision", "stages.decode.stage", "stages.track.stage"},
    "decode.cam": RUNTIMES
    | DETECTOR_CODE
    | {"cv2", "supervision", "stages.track.stage"},
    "track.cam": RUNTIMES | DETECTOR_CODE | {"cv2", "stages.decode.stage"},
    "sink.sqlite": RUNTIMES
    | DETECTOR_CODE
    | {"cv2", "av", "supervision", "stages.decode.stage", "stages.track.stage"},
}
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|( *)(\S+)$")


def _imported(stderr: str) -> set[str]:
    return {
        m.group(2) for line in stderr.splitlines() if (m := IMPORT_LINE.match(line))
    }


def _roots(modules: set[str]) -> set[str]:
    """Every module and each of its parents (``a.b.c`` -> a, a.b, a.b.c)."""
    return {
        ".".join(m.split(".")[: i + 1])
        for m in modules
        for i in range(m.count(".") + 1)
    }


def test_each_stage_imports_only_what_its_kind_needs(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "lean.yaml",
        {"cam": camera_config(ASSETS / "crowd.mp4", [CROWD_LINE])},
    )
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    control_uri = f"ipc://{runtime}/control"
    # what the supervisor hands every stage: the model's metadata, read once
    read_model_info(ASSETS / "yolo11n.onnx")
    env = {
        **chain_env(),
        "PYTHONPROFILEIMPORTTIME": "1",
        MODEL_INFO_ENV: os.environ[MODEL_INFO_ENV],
    }
    context = zmq.Context()
    control = make_socket(
        context,
        Endpoint("control", zmq.PULL, control_uri, True, LinkOptions(hwm=1000)),
    )
    command = stage_command(config, runtime)
    logs = {name: tmp_path / f"{name}.stderr" for name in FORBIDDEN}
    procs = {}
    for name in FORBIDDEN:
        with logs[name].open("w") as log:  # a file: a pipe could fill and block
            procs[name] = subprocess.Popen(
                command(name, control_uri),
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
    running: set[str] = set()
    try:
        deadline = time.monotonic() + 60
        while running != set(FORBIDDEN):
            assert time.monotonic() < deadline, f"only {running} started in 60 s"
            for name, proc in procs.items():
                assert proc.poll() is None, (name, logs[name].read_text()[-3000:])
            if control.poll(500):
                beat, _ = receive(control)
                if isinstance(beat, Heartbeat) and beat.state == "running":
                    running.add(beat.stage)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=30)
        context.destroy(linger=0)
    outputs = {name: log.read_text() for name, log in logs.items()}
    found = {}
    for name, stderr in outputs.items():
        modules = _imported(stderr)
        assert "pipeline.runtime" in modules, stderr[-2000:]  # the record is there
        found[name] = sorted(_roots(modules) & FORBIDDEN[name])
    print(json.dumps({n: len(_imported(s)) for n, s in outputs.items()}))
    assert not any(found.values()), found
