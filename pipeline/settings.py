"""The framework's own settings: supervision, links, the health endpoint. Stage
kinds bring their own config models; ``config.py`` joins them all into one tree."""

from __future__ import annotations

import socket
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from pipeline.configtypes import ConfigPath, SecretRef, StrictModel

# supervisor.cameras_per_process: auto (docs/benchmarks.md, memory per camera)
AUTO_GROUP_ABOVE = 4
AUTO_GROUP_SIZE = 8


class SupervisorConfig(StrictModel):
    stop_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="SIGTERM to SIGKILL escalation."
    )
    restart_backoff_s: float = Field(
        default=0.5, gt=0, le=60, description="First restart delay."
    )
    restart_backoff_max_s: float = Field(
        default=10.0, gt=0, le=3600, description="Restart delay cap."
    )
    max_restarts: int = Field(
        default=5, ge=0, le=1000, description="Restarts allowed per window."
    )
    restart_window_s: float = Field(
        default=60.0, gt=0, le=86400, description="Window for max_restarts."
    )
    heartbeat_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A running stage silent this long is restarted.",
    )
    stall_timeout_s: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="A running stage with work waiting and no progress this long "
        "is restarted.",
    )
    startup_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="A starting stage silent this long is restarted.",
    )
    service_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="How far below the chain's stages the services beside it (API, "
        "recorder) run, as a nice value: on a box the chain keeps busy it counts "
        "first, and live pictures and answers slow down (0: the same priority).",
    )
    watch_config: bool = Field(
        default=True,
        description="Reload rules when the config file changes (as on SIGHUP).",
    )
    cameras_per_process: int | Literal["auto"] = Field(
        default="auto",
        description="Cameras whose capture, decode and track share one process "
        "each (1-64): memory per camera falls, and a camera's crash restarts its "
        f"group. auto: 1 up to {AUTO_GROUP_ABOVE} cameras, {AUTO_GROUP_SIZE} above.",
    )

    @field_validator("cameras_per_process")
    @classmethod
    def _group_size(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 64:
            raise ValueError("give 1 to 64 cameras per process, or auto")
        return value

    def group_size(self, cameras: int) -> int:
        """Cameras per capture, decode and track process for a chain of
        ``cameras``: a few cameras keep a process each (a crash costs one
        camera); many share, since each process costs about 30 MiB of its own
        (``framechain bench memory``)."""
        if self.cameras_per_process == "auto":
            return 1 if cameras <= AUTO_GROUP_ABOVE else AUTO_GROUP_SIZE
        return self.cameras_per_process


class CurveConfig(StrictModel):
    secret_key_file: ConfigPath = Field(
        description="This host's certificate (NAME.key_secret from framechain keys)."
    )
    allowed_clients_dir: ConfigPath | None = Field(
        default=None,
        description="Folder of public certificates (NAME.key) allowed to connect to "
        "the tcp:// links this host binds; any other key is refused.",
    )
    server_keys: dict[str, ConfigPath] = Field(
        default_factory=dict,
        description="Endpoint name -> public certificate of the host that binds it.",
    )


class LinksConfig(StrictModel):
    frame_hwm: int = Field(
        default=16, ge=1, le=4096, description="Queue bound on frame links."
    )
    event_hwm: int = Field(
        default=10000, ge=1, le=1_000_000, description="Queue bound on event links."
    )
    event_linger_ms: int = Field(
        default=1000,
        ge=0,
        le=10000,
        description="How long queued events may finish on exit.",
    )
    curve: CurveConfig | None = Field(
        default=None, description="Encrypt and authenticate every tcp:// link."
    )
    endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="Override a link's URI by endpoint name, e.g. detect.in: tcp://...",
    )
    record: dict[str, ConfigPath] = Field(
        default_factory=dict,
        description="Record what a stage receives on an endpoint, e.g. "
        "track.cam1.in: cam1.fcrec (replay with framechain replay).",
    )


def _port_in_range(listen: str | None) -> str | None:
    if listen is not None and not 1 <= int(listen.rpartition(":")[2]) <= 65535:
        raise ValueError("the port must be a number from 1 to 65535")
    return listen


def loopback(listen: str) -> bool:
    """Whether ``host:port`` listens on this machine only."""
    host = listen.rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


class PreviewConfig(StrictModel):
    """The API's live pictures of each camera (latest.jpg, stream.mjpeg)."""

    width: int = Field(
        default=640,
        ge=64,
        le=3840,
        description="Picture width in pixels (never above the camera's own).",
    )
    fps: float = Field(
        default=5.0, gt=0, le=30, description="Pictures per second at most."
    )
    grid_fps: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="Pictures per second of each tile of the console's live grid "
        "(one camera opened large gets fps): an overview needs fewer, and every "
        "browser's every tile asks for each.",
    )
    jpeg_quality: int = Field(default=75, ge=10, le=100, description="JPEG quality.")
    streams_per_client: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Live streams one client address may hold open at once.",
    )


class HttpConfig(StrictModel):
    listen: Annotated[str | None, AfterValidator(_port_in_range)] = Field(
        default=None,
        pattern=r"^[^:\s]*:\d{1,5}$",
        description="host:port for /metrics, /healthz and /readyz (off when unset), "
        "and the API with api: true.",
    )
    api: bool = Field(
        default=False,
        description="Serve the HTTP API (/api/..., /openapi.json) on listen, from a "
        "service beside the chain.",
    )
    token: SecretRef | None = Field(
        default=None,
        description="Token every request but /healthz must carry (Authorization: "
        "Bearer, or as the password of HTTP basic); required when the API listens "
        "beyond loopback.",
    )
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="The API's address as other machines reach it "
        "(https://edge-01.example:9410, a proxy's path allowed): events carry their "
        "snapshot and clip URLs under it. Default: http://<listen, with this "
        "host's name for 0.0.0.0>.",
    )
    preview: PreviewConfig = Field(
        default_factory=PreviewConfig,
        description="Live annotated pictures: drawn only while someone watches.",
    )

    def base_url(self) -> str:
        """The URL the API's paths go under, without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host, _, port = (self.listen or "").rpartition(":")
        if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104
            host = socket.gethostname()
        return f"http://{host}:{port}"

    @model_validator(mode="after")
    def _guarded(self) -> HttpConfig:
        if self.api and self.listen is None:
            raise ValueError("api: true needs listen (host:port) to serve it on")
        if self.api and self.token is None and not loopback(self.listen or ""):
            raise ValueError(
                f"the API on {self.listen} is reachable beyond this machine: set "
                "token (${ENV} or a credential file), or listen on 127.0.0.1"
            )
        return self
