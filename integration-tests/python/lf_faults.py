"""A fault-injecting HTTP/1.1 reverse proxy for the S3 server the tests run (moto).

It serves one request per client connection (it answers `Connection: close`) and injects,
into every `every`-th request whose method matches, one of these faults:

- `slowdown`: 503 with S3's `SlowDown` error, the request never reaches the store;
- `error`: 500 `InternalError`, the request never reaches the store;
- `error_after`: the store serves the request (a write lands), then the client gets a 500;
- `reset`: the connection is reset (TCP RST) before the request reaches the store;
- `reset_after`: the store serves the request, then the connection is reset unanswered;
- `truncate`: the response's head and half its body, then the connection closes;
- `stall`: the response's head and half its body, a stall of `seconds`, then the close;
- `latency`: `seconds` of delay, then the request is served.

toxiproxy and `tc netem` are not available here (see the tooling notes), and TCP resets
and stalled bodies need control over the socket, hence this small proxy of our own.
"""

import asyncio
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass

KINDS = ("slowdown", "error", "error_after", "reset", "reset_after", "truncate", "stall", "latency")
READS = frozenset({"GET", "HEAD"})
WRITES = frozenset({"PUT", "POST", "DELETE"})

S3_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault</RequestId></Error>"
)


@dataclass(frozen=True)
class Fault:
    """Inject `kind` into every `every`-th request with a method in `methods`."""

    kind: str
    methods: frozenset = READS | WRITES
    every: int = 3
    seconds: float = 1.0


class FaultProxy:
    """The proxy, served by an asyncio loop on its own thread; `url` is its endpoint."""

    def __init__(self, upstream: str):
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.fault: Fault | None = None
        self.matched = 0
        self.injected: Counter = Counter()
        self.requests = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def set(self, fault: Fault | None) -> None:
        """Injects `fault` from now on (`None`: none)."""
        with self._lock:
            self.fault, self.matched = fault, 0

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()

    def _choose(self, method: str) -> Fault | None:
        with self._lock:
            self.requests += 1
            fault = self.fault
            if fault is None or method not in fault.methods:
                return None
            self.matched += 1
            if self.matched % fault.every:
                return None
            self.injected[fault.kind] += 1
            return fault

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            body = await read_body(reader, head)
            method = head.split(b" ", 1)[0].decode()
            fault = self._choose(method)
            kind = fault.kind if fault else None
            if kind == "latency":
                await asyncio.sleep(fault.seconds)
            if kind in ("slowdown", "error"):
                writer.write(error_response(kind))
            elif kind == "reset":
                reset(writer)
                return
            else:
                response = await self._forward(head, body)
                if kind == "error_after":
                    writer.write(error_response("error"))
                elif kind == "reset_after":
                    reset(writer)
                    return
                elif kind in ("truncate", "stall"):
                    end = response.index(b"\r\n\r\n") + 4
                    writer.write(response[: end + (len(response) - end) // 2])
                    await writer.drain()
                    if kind == "stall":
                        await asyncio.sleep(fault.seconds)
                else:
                    writer.write(response)
            await writer.drain()
            writer.close()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def _forward(self, head: bytes, body: bytes) -> bytes:
        """Sends the request to the store on a connection of its own; the whole response."""
        lines = [line for line in head.split(b"\r\n")[:-2] if not line.lower().startswith(b"connection:")]
        request = b"\r\n".join(lines + [b"Connection: close", b"", b""]) + body
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        upstream_writer.write(request)
        await upstream_writer.drain()
        response = await upstream_reader.read()
        upstream_writer.close()
        return close_after(response)


async def read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """The request body: by Content-Length, or chunked (re-sent with a length)."""
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        return await reader.readexactly(int(headers[b"content-length"]))
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        raise ConnectionError("chunked request bodies are not supported by the fault proxy")
    return b""


def close_after(response: bytes) -> bytes:
    """`response` with `Connection: close`, since each connection serves one request."""
    end = response.index(b"\r\n\r\n")
    lines = [line for line in response[:end].split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join(lines + [b"Connection: close"]) + response[end:]


def error_response(kind: str) -> bytes:
    status, code, message = {
        "slowdown": (b"503 Slow Down", "SlowDown", "Please reduce your request rate."),
        "error": (b"500 Internal Server Error", "InternalError", "We encountered an internal error."),
    }[kind]
    body = S3_ERROR.format(code=code, message=message).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/xml\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )


def reset(writer: asyncio.StreamWriter) -> None:
    """Closes the connection with a TCP RST (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
