"""Events to an HTTP endpoint: ``POST`` of ``{"events": [...]}`` (JSON), oldest first.

A 2xx answer delivers the batch. Connection errors, timeouts, 408, 429 and 5xx are
retried with capped, jittered backoff (``Retry-After`` is honoured), the events
waiting in the disk spool meanwhile. Any other 4xx means the receiver will never
take that batch: it is set aside in the spool's ``dead`` table with the reason and
logged, so one bad event cannot block the rest for ever. Receivers deduplicate by
``event_id`` if they need exactly-once: a batch whose answer was lost is sent again.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import msgspec
from pydantic import Field, SecretStr, field_validator

from pipeline.configtypes import ConfigPath, EnvSecret, StrictModel
from pipeline.log import redact
from stages.sink_forward import ForwardingSink

log = logging.getLogger(__name__)

RETRIED_STATUS = {408, 425, 429}


class WebhookSinkConfig(StrictModel):
    kind: Literal["webhook"] = Field(description="HTTP POST of event batches.")
    name: str = Field(
        default="webhook",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Sink name, unique among sinks.",
    )
    url: EnvSecret = Field(
        description="http(s) URL events are POSTed to; may hold a token via ${ENV}."
    )
    headers: dict[str, EnvSecret] = Field(
        default_factory=dict,
        description="Extra request headers (Authorization: Bearer ${TOKEN}).",
    )
    batch_size: int = Field(
        default=100, ge=1, le=10000, description="Events per request at most."
    )
    timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="Connect and read timeout per request."
    )
    retry_initial_s: float = Field(
        default=1.0, ge=1, le=60, description="First retry delay (then doubled)."
    )
    retry_max_s: float = Field(
        default=30.0, ge=1, le=3600, description="Retry delay cap."
    )
    spool_dir: ConfigPath = Field(
        default="spool",
        validate_default=True,
        description="Folder of the disk spool (<name>.db) used while the receiver "
        "is away.",
    )

    def target(self) -> str:
        """Where events go, for the run summary (credentials redacted)."""
        return redact(self.url.get_secret_value())

    @field_validator("url")
    @classmethod
    def _http(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("the webhook url must start with http:// or https://")
        return value


class WebhookSink(ForwardingSink):
    kind: ClassVar[str] = "webhook"

    def __init__(self, config: WebhookSinkConfig, streams: Sequence[str]) -> None:
        url = config.url.get_secret_value()
        super().__init__(
            streams,
            Path(config.spool_dir) / f"{config.name}.db",
            f"webhook {redact(url)}",
            (config.retry_initial_s, config.retry_max_s),
        )
        self.config = config
        self.url = url
        self.requests = 0
        self.rejected = 0
        self._encoder = msgspec.json.Encoder()

    def deliver(self) -> None:
        assert self.spool is not None
        deadline = time.monotonic() + self.config.timeout_s
        while len(self.spool) and time.monotonic() < deadline:
            batch = self.spool.peek(self.config.batch_size)
            body = self._encoder.encode(
                {"events": [msgspec.structs.asdict(e) for _, e in batch]}
            )
            request = urllib.request.Request(  # noqa: S310  http(s) checked in config
                self.url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": "framechain",
                    **{k: v.get_secret_value() for k, v in self.config.headers.items()},
                },
            )
            self.requests += 1
            try:
                with urllib.request.urlopen(  # noqa: S310
                    request, timeout=self.config.timeout_s
                ) as response:
                    response.read()
            except urllib.error.HTTPError as e:
                if e.code >= 500 or e.code in RETRIED_STATUS:
                    self.failed(f"HTTP {e.code} {e.reason}")
                    self._honour_retry_after(e.headers.get("Retry-After"))
                    return
                self.rejected += len(batch)
                reason = f"HTTP {e.code} {e.reason}: {_excerpt(e)}"
                log.error(
                    "%s refused %d events for good (%s); they are kept in the "
                    "spool's dead table",
                    self.label,
                    len(batch),
                    reason,
                )
                self.spool.dead(batch, reason)
                continue
            except (OSError, ValueError) as e:  # URLError, timeouts, resets
                reason = getattr(e, "reason", None) or e
                self.failed(redact(str(reason)))
                return
            self.succeeded(batch)

    def _honour_retry_after(self, value: str | None) -> None:
        if value and value.strip().isdigit():
            wait = min(float(value), 300.0)
            self.retry_at = max(self.retry_at, time.monotonic() + wait)

    def stats(self) -> dict[str, object]:
        return {**super().stats(), "requests": self.requests, "rejected": self.rejected}


def _excerpt(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read(200).decode("utf-8", "replace")
    except OSError:
        return ""
    return json.dumps(text.strip())[:200]
