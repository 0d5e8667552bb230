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
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Annotated, Any, Literal

import msgspec
from pydantic import Field, SecretStr, field_validator

from pipeline.configtypes import EnvSecret, url_of
from pipeline.log import redact
from pipeline.messages import Event
from stages.sinks.forward import ForwardingSink, ForwardingSinkConfig
from stages.sinks.stats import WebhookSinkStats

log = logging.getLogger(__name__)

RETRIED_STATUS = {408, 425, 429}


class WebhookSinkConfig(ForwardingSinkConfig):
    kind: Literal["webhook"] = Field(description="HTTP POST of event batches.")
    name: str = Field(
        default="webhook",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Sink name, unique among sinks.",
    )
    url: Annotated[EnvSecret, url_of("http", "https")] = Field(
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
        default=10.0, gt=0, le=120, description="Connect and read timeout per request."
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
    def __init__(self, config: WebhookSinkConfig, streams: Sequence[str]) -> None:
        url = config.url.get_secret_value()
        super().__init__(config, streams, f"webhook {redact(url)}")
        self.config = config
        self.url = url
        self.requests = 0
        self.rejected = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[list[tuple[int, Event]], Future[Any]] | None = None
        self._encoder = msgspec.json.Encoder()

    def setup(self) -> None:
        super().setup()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="webhook")

    def deliver(self) -> None:
        """One request at a time, on a worker thread: the stage's loop (heartbeats,
        receiving events into the spool) never waits for the receiver."""
        assert self.spool is not None
        if self._pending is not None:
            batch, future = self._pending
            if not future.done():
                return
            self._pending = None
            self._settle(batch, future.result())
            if self.retry_at > self.clock.monotonic():
                return
        if not len(self.spool):
            return
        batch = self.spool.peek(self.config.batch_size)
        body = self._encoder.encode(
            {"events": [msgspec.structs.asdict(e) for _, e in batch]}
        )
        self.requests += 1
        assert self._pool is not None
        self._pending = (batch, self._pool.submit(self._post, body))

    def _post(self, body: bytes) -> tuple[str, str, str | None]:
        """Runs on the worker thread: ("ok" | "retry" | "dead", reason, Retry-After)."""
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
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self.config.timeout_s
            ) as response:
                response.read()
        except urllib.error.HTTPError as e:
            if e.code >= 500 or e.code in RETRIED_STATUS:
                return (
                    "retry",
                    f"HTTP {e.code} {e.reason}",
                    e.headers.get("Retry-After"),
                )
            return "dead", f"HTTP {e.code} {e.reason}: {_excerpt(e)}", None
        except (OSError, ValueError) as e:  # URLError, timeouts, resets
            return "retry", redact(str(getattr(e, "reason", None) or e)), None
        return "ok", "", None

    def _settle(
        self, batch: list[tuple[int, Event]], result: tuple[str, str, str | None]
    ) -> None:
        assert self.spool is not None
        outcome, reason, retry_after = result
        if outcome == "ok":
            self.succeeded(batch)
        elif outcome == "retry":
            self.failed(reason)
            self._honour_retry_after(retry_after)
        else:
            self.rejected += len(batch)
            log.error(
                "%s refused %d events for good (%s); they are kept in the spool's "
                "dead table",
                self.label,
                len(batch),
                reason,
            )
            self.spool.dead(batch, reason)

    def _honour_retry_after(self, value: str | None) -> None:
        if value and value.strip().isdigit():
            wait = min(float(value), 300.0)
            self.retry_at = max(self.retry_at, self.clock.monotonic() + wait)

    def stats(self) -> WebhookSinkStats:
        base = super().stats()
        return WebhookSinkStats(
            **msgspec.structs.asdict(base),
            requests=self.requests,
            rejected=self.rejected,
        )

    def close(self) -> None:
        """A request in flight is left to finish (its events stay spooled until a
        later run delivers them)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        super().close()


def _excerpt(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read(200).decode("utf-8", "replace")
    except OSError:
        return ""
    return json.dumps(text.strip())[:200]
