"""ZeroMQ sockets made one way: every socket gets HWM, LINGER, IMMEDIATE and a message
size cap from one ``LinkOptions``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from pipeline.errors import MessageError
from pipeline.messages import Message, decode, encode
from pipeline.payload import check_payload

log = logging.getLogger(__name__)

Buffer = bytes | memoryview | bytearray


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """Socket settings for one link. Frame links keep queues short and drop queued
    messages on close; event links linger so that events already produced get out."""

    hwm: int = 16
    linger_ms: int = 0
    max_message_bytes: int = 64 * 1024 * 1024
    heartbeat_ivl_ms: int = 1000
    heartbeat_timeout_ms: int = 3000


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """CURVE keys (Z85 bytes) for one tcp:// socket. A binding socket is the CURVE
    server and admits only the client keys in ``allowed_dir`` (ZAP); a connecting
    socket is a client and must know the server's public key."""

    public: bytes
    secret: bytes
    server_public: bytes | None = None
    allowed_dir: str | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a link: which socket type, where, and whether this end binds.
    ``aliases``: more port names that send on this socket (``topology.route``)."""

    port: str
    socket_type: int
    uri: str
    bind: bool
    options: LinkOptions = LinkOptions()
    curve: CurveKeys | None = None
    aliases: tuple[str, ...] = ()


def make_socket(context: zmq.Context[Any], endpoint: Endpoint) -> zmq.Socket[Any]:
    """Create, configure and bind or connect a socket for ``endpoint``."""
    options = endpoint.options
    sock: zmq.Socket[Any] = context.socket(endpoint.socket_type)
    sock.setsockopt(zmq.SNDHWM, options.hwm)
    sock.setsockopt(zmq.RCVHWM, options.hwm)
    sock.setsockopt(zmq.LINGER, options.linger_ms)
    sock.setsockopt(zmq.MAXMSGSIZE, options.max_message_bytes)
    if endpoint.socket_type in (zmq.PUSH, zmq.DEALER):
        # Queue nothing for peers that are not connected yet: sends block instead,
        # which is exactly the backpressure a file source wants.
        sock.setsockopt(zmq.IMMEDIATE, 1)
    if endpoint.curve is not None:
        keys = endpoint.curve
        sock.curve_secretkey, sock.curve_publickey = keys.secret, keys.public
        if endpoint.bind:
            sock.curve_server = True
        else:
            assert keys.server_public is not None
            sock.curve_serverkey = keys.server_public
    if endpoint.uri.startswith("tcp://"):
        sock.setsockopt(zmq.HEARTBEAT_IVL, options.heartbeat_ivl_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, options.heartbeat_timeout_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, options.heartbeat_timeout_ms)
    try:
        if endpoint.bind:
            sock.bind(endpoint.uri)
        else:
            sock.connect(endpoint.uri)
    except zmq.ZMQError as e:
        sock.close(0)
        verb = "bind" if endpoint.bind else "connect"
        raise OSError(
            f"cannot {verb} {endpoint.port} link at {endpoint.uri}: {e.strerror}; "
            "is another framechain run using it?"
        ) from e
    return sock


def send(
    sock: zmq.Socket[Any],
    message: Message,
    parts: Sequence[Buffer] = (),
    flags: int = 0,
) -> None:
    """Send a header and its binary parts as one multipart message. Parts of 64 KiB or
    more go without a copy (pyzmq's copy threshold decides)."""
    sock.send_multipart([encode(message), *parts], flags=flags, copy=False)


def receive(
    sock: zmq.Socket[Any], flags: int = 0, network: bool = False
) -> tuple[Message, list[memoryview]]:
    """Receive one message; the parts are zero-copy views into ZeroMQ's buffers.

    Raises:
        MessageError: the header did not validate, or does not agree with its
            parts (``pipeline.payload``; ``network``: a tcp:// link); the
            message is dropped.
    """
    frames = sock.recv_multipart(flags=flags, copy=False)
    if not frames:
        raise MessageError("empty multipart message")
    message = decode(frames[0].buffer)
    parts = [f.buffer for f in frames[1:]]
    check_payload(message, parts, network)
    return message, parts
