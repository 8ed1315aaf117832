"""A broker or result-backend URL that points at something that is not a usable Redis gives ONE line naming the URL
(password redacted) and the cause, in the Python API, the CLI and the worker; never a traceback, never an empty
reason. Permanent causes (not Redis, TLS mismatch, wrong password or ACL user, NOPERM) raise
``BrokerMisconfigured``: the CLI exits 2 and a starting worker fails at once, whatever ``WORKER_BROKER_WAIT`` says.
Transient ones (connection refused, unknown host) raise ``BrokerUnavailable``: exit 1, and a worker waits with the
reason in each log line.

Every server is a real process on 127.0.0.1, started here and stopped by pid: a redis-server with ``requirepass`` and
two ACL users, a redis-server with a TLS port (certificates from a test CA made with ``openssl``), a tiny HTTP server
and a server that accepts connections and never answers.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from bananas_redis import RedisBroker, RedisOptions
from bananas_redis.errors import Cause, _excerpt, cause_of, unavailable
from bananas_redis.results import RedisResultBackend
from bananas_redis.testing import RedisServer, find_redis_servers, free_port, make_certificates
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bananas.broker import Envelope
from bananas.client import Client
from bananas.plugin_api import Bananas, BrokerMisconfigured, BrokerUnavailable, redact_url

BINARY = find_redis_servers()[0][1]
PASSWORD = "s3cret-real"
SECRET = "hunter2"  # the password in the URLs under test: it must never be printed
CONNECT_TIMEOUT = 1.0
DOC = Path(__file__).resolve().parents[3] / "docs" / "TROUBLESHOOTING_CONNECTIONS.md"
EXAMPLE = re.compile(r"<!-- troubleshooting-example\b[^>]*-->\n```python\n(.*?)\n```", re.S)

HTTP_SERVER = textwrap.dedent(
    """
    # A tiny HTTP/1.1 server: answers whatever it is sent the way nginx answers a malformed request.
    import socketserver, sys

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.recv(4096)
            self.request.sendall(b"HTTP/1.1 400 Bad Request\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n")

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)

APP = textwrap.dedent(
    """
    from bananas import Bananas

    app = Bananas()

    @app.job("touch")
    def touch():
        return "touched"
    """
)


# -- the servers ------------------------------------------------------------------------------------------------------
def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def http_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    script = tmp_path_factory.mktemp("http") / "tiny_http.py"
    script.write_text(HTTP_SERVER)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _accepts(port):
            assert proc.poll() is None and time.monotonic() < deadline, "the tiny HTTP server did not start"
            time.sleep(0.02)
        yield port
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def auth_server() -> Iterator[RedisServer]:
    """``requirepass`` for the default user; ACL users ``alice`` (everything), ``carol`` (no scripting) and ``dave``
    (the keys of the default prefix only)."""
    server = RedisServer(
        BINARY,
        extra=(
            "--requirepass", PASSWORD,
            "--user", "alice", "on", ">alice-pw", "~*", "&*", "+@all",
            "--user", "carol", "on", ">carol-pw", "~*", "&*", "+@all", "-@scripting",
            # the grant docs/TROUBLESHOOTING_CONNECTIONS.md recommends: the default prefix's keys only
            "--user", "dave", "on", ">dave-pw", "~bananas:*", "~{bananas:*", "+@all", "-@dangerous",
        ),
    ).start()
    try:
        yield server
    finally:
        server.cleanup()


@attrs.frozen
class TlsServer:
    plain_port: int
    tls_port: int
    ca: str


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A redis-server with a plain port and a TLS port (a certificate for 127.0.0.1 from a test CA)."""
    if shutil.which("openssl") is None:
        pytest.skip("the TLS cases need the openssl command to make a self-signed certificate")
    try:
        certs = make_certificates(str(tmp_path_factory.mktemp("tls")))
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"openssl could not make test certificates: {exc.stderr.decode(errors='replace').strip()}")
    tls_port = free_port()
    server = RedisServer(
        BINARY,
        extra=("--tls-port", str(tls_port), "--tls-cert-file", certs["server.crt"], "--tls-key-file",
               certs["server.key"], "--tls-ca-cert-file", certs["ca.crt"], "--tls-auth-clients", "no"),
    )
    try:
        server.start()
    except RuntimeError as exc:
        server.cleanup()
        pytest.skip(f"{BINARY} cannot serve TLS here (built without TLS?): {exc}")
    try:
        deadline = time.monotonic() + 10
        while not _accepts(tls_port):
            assert time.monotonic() < deadline, "the TLS port did not open"
            time.sleep(0.02)
        yield TlsServer(server.port, tls_port, certs["ca.crt"])
    finally:
        server.cleanup()


# -- the cases --------------------------------------------------------------------------------------------------------
@attrs.frozen
class Case:
    """A URL, whether its cause is permanent, the cause as a regular expression and the password it holds."""

    url: str
    permanent: bool
    cause: str
    secret: str | None = SECRET

    def message(self, kind: str, what: str) -> str:
        """The whole one-line message as a regular expression."""
        head = f"{kind} {re.escape(redact_url(self.url))}"
        verb = rf"unusable \({what}\)" if self.permanent else f"unavailable during {what}"
        return f"{head} {verb}: {self.cause}"

    @property
    def error(self) -> type[BrokerUnavailable]:
        return BrokerMisconfigured if self.permanent else BrokerUnavailable

    @property
    def exit_code(self) -> int:
        return 2 if self.permanent else 1


WRONGPASS = (
    r"authentication failed: WRONGPASS invalid username-password pair or user is disabled \(the password is wrong "
    r"for {who}, or there is no such ACL user; check both in the URL\)"
)


def _not_redis(port: int) -> str:
    return rf"not a Redis server \(got 'HTTP/1\.1 400 Bad Request' from 127\.0\.0\.1:{port}; check the host and port\)"


def _make_case(name: str, request: pytest.FixtureRequest) -> Case:
    if name == "http":
        port = request.getfixturevalue("http_port")
        return Case(
            f"redis://:{SECRET}@127.0.0.1:{port}/0",
            True,
            _not_redis(port),
        )
    if name == "closed-port":
        port = free_port()
        return Case(
            f"redis://:{SECRET}@127.0.0.1:{port}/0",
            False,
            rf"connection refused: nothing listens on 127\.0\.0\.1:{port} \(is Redis running on this port\?\)",
        )
    if name == "unknown-host":
        return Case(
            f"redis://:{SECRET}@nosuchhost.invalid:6379/0",
            False,
            r"unknown host 'nosuchhost\.invalid' \([^()]+: check the host name, or the DNS\)",
        )
    if name in ("wrong-password", "no-password", "wrong-acl-user", "acl-user-without-scripting"):
        port = request.getfixturevalue("auth_server").port
        if name == "wrong-password":
            return Case(f"redis://:{SECRET}@127.0.0.1:{port}/0", True, WRONGPASS.format(who="the default user"))
        if name == "no-password":
            return Case(
                f"redis://127.0.0.1:{port}/0",
                True,
                r"authentication required: the server has a password and the URL gives none "
                r"\(redis://:PASSWORD@host or redis://USER:PASSWORD@host\)",
                secret=None,
            )
        if name == "wrong-acl-user":
            return Case(f"redis://bob:{SECRET}@127.0.0.1:{port}/0", True, WRONGPASS.format(who="user 'bob'"))
        return Case(
            f"redis://carol:carol-pw@127.0.0.1:{port}/0",
            True,
            r"permission denied: NOPERM this user has no permissions to run the '[a-z|]+' command \(grant this ACL "
            r"user the commands and keys Bananas uses, e\.g\. ACL SETUSER <user> ~<prefix>:\* ~\{<prefix>:\* \+@all\)",
            secret="carol-pw",
        )
    tls: TlsServer = request.getfixturevalue("tls_server")
    if name == "rediss-to-plain-port":
        return Case(
            f"rediss://:{SECRET}@127.0.0.1:{tls.plain_port}/0",
            True,
            rf"TLS handshake failed: 127\.0\.0\.1:{tls.plain_port} speaks plain Redis, not TLS \(use redis://, or "
            r"rediss:// with the server's tls-port\)",
        )
    if name == "redis-to-tls-port":
        return Case(
            f"redis://:{SECRET}@127.0.0.1:{tls.tls_port}/0",
            True,
            rf"the server at 127\.0\.0\.1:{tls.tls_port} expects TLS \(it closed a plain connection and accepts a TLS "
            r"handshake\): use rediss://",
        )
    assert name == "untrusted-certificate"
    return Case(
        f"rediss://:{SECRET}@127.0.0.1:{tls.tls_port}/0",
        True,
        r"TLS handshake failed: certificate verify failed: self-signed certificate in certificate chain \(set "
        r"ssl_ca_certs to the CA that signed the server's certificate, or ssl_cert_reqs\)",
    )


PERMANENT = [
    "http",
    "rediss-to-plain-port",
    "redis-to-tls-port",
    "untrusted-certificate",
    "wrong-password",
    "no-password",
    "wrong-acl-user",
    "acl-user-without-scripting",
]
TRANSIENT = ["closed-port", "unknown-host"]


@pytest.fixture(params=PERMANENT + TRANSIENT)
def case(request: pytest.FixtureRequest) -> Case:
    return _make_case(request.param, request)


@pytest.fixture(params=[name for name in PERMANENT + TRANSIENT if name != "acl-user-without-scripting"])
def results_case(request: pytest.FixtureRequest) -> Case:
    """The cases for the result backend: it runs no scripts, so an ACL user without scripting may use it."""
    return _make_case(request.param, request)


def _one_line(text: str, pattern: str, case: Case) -> None:
    assert "\n" not in text
    assert re.fullmatch(pattern, text), f"\n{text}\ndoes not match\n{pattern}"
    if case.secret:
        assert case.secret not in text


# -- the Python API ---------------------------------------------------------------------------------------------------
def test_app_enqueue_and_the_client_raise_one_line_naming_the_url_and_the_cause(case: Case) -> None:
    # Given an app and a client whose broker URL points at the wrong server
    options = {"broker_options.connect_timeout": CONNECT_TIMEOUT, "broker_options.timeout": 5.0}
    app = Bananas(broker=case.url, overrides=options, env={})

    @app.job("touch")
    def touch() -> str:
        return "touched"

    # When a job is enqueued / Then BrokerMisconfigured (permanent) or BrokerUnavailable with that one line
    try:
        with pytest.raises(case.error) as info:
            app.enqueue("touch")
    finally:
        app.close()
    assert type(info.value) is case.error
    _one_line(str(info.value), case.message("redis broker", "connect"), case)

    # And the client says the same
    with Client(case.url, overrides=options, env={}) as client:
        with pytest.raises(case.error) as info:
            client.submit_job("touch")
    _one_line(str(info.value), case.message("redis broker", "connect"), case)


def test_the_blocking_enqueue_lane_names_the_cause(case: Case) -> None:
    # Given a broker that never connected (enqueue_sync opens its own connections)
    broker = RedisBroker(case.url, RedisOptions(connect_timeout=CONNECT_TIMEOUT, timeout=5.0))
    try:
        # When / Then
        with pytest.raises(case.error) as info:
            broker.enqueue_sync([Envelope("a", "q", b"body")])
    finally:
        broker._close_sync()
    _one_line(str(info.value), case.message("redis broker", "enqueue"), case)


async def test_the_result_backend_names_the_cause(results_case: Case) -> None:
    # Given a result backend URL that points at the wrong server
    case = results_case
    backend = RedisResultBackend(case.url, {"connect_timeout": CONNECT_TIMEOUT, "timeout": 5.0})
    try:
        # When it connects / Then the same cause, naming the result backend
        with pytest.raises(case.error) as info:
            await backend.connect()
    finally:
        await backend.close()
    _one_line(str(info.value), case.message("redis result backend", "connect"), case)


async def test_the_tls_server_is_usable_with_its_certificate(tls_server: TlsServer) -> None:
    # Given the TLS server of the mismatch cases / When a rediss:// URL trusts its certificate / Then it works,
    # so the failures above come from the mismatch, not from a broken TLS set-up
    url = f"rediss://127.0.0.1:{tls_server.tls_port}/0"
    broker = RedisBroker(url, RedisOptions(ssl_ca_certs=tls_server.ca, prefix="tlscheck"))
    await broker.connect()
    try:
        await broker.enqueue([Envelope("a", "q", b"body")])
        assert [d.id for d in await broker.fetch(["q"], 1, 0)] == ["a"]
    finally:
        await broker.close()


async def test_the_documented_acl_grant_is_enough_for_the_broker_and_the_result_backend(
    auth_server: RedisServer,
) -> None:
    # Given the ACL user the troubleshooting doc recommends (keys of the default prefix, no others)
    doc = DOC.read_text(encoding="utf-8")
    assert "`ACL SETUSER NAME on >PASSWORD ~bananas:* ~{bananas:* +@all -@dangerous`" in doc
    url = f"redis://dave:dave-pw@127.0.0.1:{auth_server.port}/0"

    # When a broker and a result backend with the default prefix do their whole job / Then nothing is refused
    broker = RedisBroker(url, RedisOptions())
    results = RedisResultBackend(url)
    try:
        await broker.connect()
        await broker.enqueue([Envelope("a", "q", b"body"), Envelope("b", "q", b"later", eta=time.time() + 3600)])
        (delivery,) = await broker.fetch(["q"], 10, 0)
        assert await broker.ack([delivery]) == [True]
        await broker.move_due()
        await broker.reap()
        assert (await broker.depths())["q"].scheduled == 1
        await results.connect()
        await results.store("a", b"result", 60)
        assert await results.get("a", wait=1) == b"result"
    finally:
        await broker.close()
        await results.close()


# -- the CLI ----------------------------------------------------------------------------------------------------------
def _write_config(folder: Path, url: str, result_backend: str | None = None) -> None:
    lines = [f'broker = "{url}"']
    if result_backend:
        lines.append(f'result_backend = "{result_backend}"')
    lines += ["[broker_options]", f"connect_timeout = {CONNECT_TIMEOUT}", "timeout = 5.0"]
    if result_backend:
        lines += ["[result_backend_options]", f"connect_timeout = {CONNECT_TIMEOUT}", "timeout = 5.0"]
    (folder / "bananas.toml").write_text("\n".join(lines) + "\n")
    (folder / "wapp.py").write_text(APP)


def _env(folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BANANAS_", "WORKER_", "REDIS_", "LOG_"))}
    env.update(BANANAS_LOAD_PLUGINS="bananas-redis", PYTHONPATH=str(folder), LOG_COLOR="false", **extra)
    return env


def _bananas(folder: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bananas.cli", *args],
        cwd=folder, env=_env(folder, **env), capture_output=True, text=True, timeout=timeout,
    )


def _error_line(result: subprocess.CompletedProcess[str], case: Case, kind: str = "redis broker") -> None:
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    _one_line(errors[0], "Error: " + case.message(kind, "connect"), case)
    if case.secret:
        assert case.secret not in result.stderr + result.stdout


def test_bananas_queues_prints_one_line_and_exits_2_or_1(case: Case, tmp_path: Path) -> None:
    # Given a config file whose broker is the wrong server
    _write_config(tmp_path, case.url)

    # When `bananas queues` runs / Then stderr is that one line; exit 2 when retrying cannot help, else 1
    result = _bananas(tmp_path, "queues")
    assert result.returncode == case.exit_code, result.stderr
    assert result.stderr.splitlines() == [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    _error_line(result, case)


@pytest.mark.parametrize("name", ["http", "closed-port"])
@pytest.mark.parametrize("command", [("dlq", "list"), ("job", "0123456789abcdef")], ids=["dlq-list", "job"])
def test_bananas_dlq_and_job_print_the_same_line(
    name: str, command: tuple[str, ...], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Given a wrong broker / When `bananas dlq list` or `bananas job` runs / Then the same one line and exit code
    case = _make_case(name, request)
    _write_config(tmp_path, case.url)
    result = _bananas(tmp_path, *command)
    assert result.returncode == case.exit_code, result.stderr
    _error_line(result, case)


# -- the worker -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["http", "rediss-to-plain-port", "redis-to-tls-port", "wrong-acl-user"])
@pytest.mark.parametrize("broker_wait", ["", "30s"], ids=["no-bound", "bounded-30s"])
def test_a_worker_fails_at_once_when_retrying_cannot_help(
    name: str, broker_wait: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Given a worker whose broker answers but cannot be used, with no bound on its wait or a long one
    case = _make_case(name, request)
    _write_config(tmp_path, case.url)
    extra = {"WORKER_BROKER_WAIT": broker_wait} if broker_wait else {}

    # When it starts
    started = time.monotonic()
    result = _bananas(tmp_path, "worker", "--app", "wapp", timeout=60, **extra)

    # Then it does not wait: exit 2 with the one line (and one error log line saying why it did not wait)
    assert time.monotonic() - started < 20
    assert result.returncode == 2, result.stderr
    _error_line(result, case)
    assert "waiting for the broker" not in result.stderr
    assert "not waiting: retrying cannot help" in result.stderr


def test_a_supervised_fleet_stops_instead_of_restarting_its_workers(http_port: int, tmp_path: Path) -> None:
    # Given `bananas worker --processes 2` whose broker is an HTTP server
    url = f"redis://:{SECRET}@127.0.0.1:{http_port}/0"
    _write_config(tmp_path, url)

    # When it starts / Then the children fail at once with status 2 and the supervisor does not restart them
    started = time.monotonic()
    result = _bananas(tmp_path, "worker", "--app", "wapp", "--processes", "2")
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 30
    assert "Traceback" not in result.stderr and "restarting in" not in result.stderr, result.stderr
    assert "exited with a usage error (status 2); not restarting" in result.stderr
    case = Case(url, True, _not_redis(http_port))
    for line in result.stderr.splitlines():
        if line.startswith("Error:"):
            _one_line(line, "Error: " + case.message("redis broker", "connect"), case)


@pytest.mark.parametrize("name", TRANSIENT)
def test_a_bounded_worker_wait_names_the_cause_in_every_attempt(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Given a worker whose broker cannot be reached, with WORKER_BROKER_WAIT=1s
    case = _make_case(name, request)
    _write_config(tmp_path, case.url)

    # When it starts
    result = _bananas(tmp_path, "worker", "--app", "wapp", WORKER_BROKER_WAIT="1s")

    # Then it waited, each attempt naming the cause, and gave up with the one line and exit 1
    assert result.returncode == 1, result.stderr
    _error_line(result, case)
    waits = [line for line in result.stderr.splitlines() if "waiting for the broker" in line]
    assert waits, result.stderr
    for line in waits:
        assert re.search(case.message("redis broker", "connect") + "$", line), line


def test_an_unbounded_worker_keeps_waiting_and_says_why(tmp_path: Path) -> None:
    # Given a worker with no bound on its wait and nothing on the broker's port
    port = free_port()
    _write_config(tmp_path, f"redis://:{SECRET}@127.0.0.1:{port}/0")
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bananas.cli", "worker", "--app", "wapp"],
            cwd=tmp_path, env=_env(tmp_path), stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        # When it has tried twice
        deadline = time.monotonic() + 30
        while log.read_text().count("waiting for the broker") < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        # Then it is still waiting, and each line says what is wrong
        assert proc.poll() is None, log.read_text()
        waits = [line for line in log.read_text().splitlines() if "waiting for the broker" in line]
        assert len(waits) >= 2
        for line in waits:
            assert line.endswith(f"connection refused: nothing listens on 127.0.0.1:{port} (is Redis running on "
                                 "this port?)"), line
            assert SECRET not in line
    finally:
        _stop(proc)


def test_a_worker_whose_result_backend_is_not_redis_fails_at_once(
    http_port: int, redis_url: str, tmp_path: Path
) -> None:
    # Given a good broker and a result backend URL pointing at an HTTP server
    result_url = f"redis://:{SECRET}@127.0.0.1:{http_port}/1"
    _write_config(tmp_path, redis_url, result_backend=result_url)

    # When the worker starts / Then it fails at start-up (not at its first job) with the one line, exit 2
    result = _bananas(tmp_path, "worker", "--app", "wapp")
    assert result.returncode == 2, result.stderr
    case = Case(result_url, True, _not_redis(http_port))
    _error_line(result, case, kind="redis result backend")


SILENT_SERVER = textwrap.dedent(
    """
    # Accepts connections and never answers (a hung service, or one waiting for a protocol Redis does not speak).
    import socket, sys, time

    listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    held = []
    while True:
        held.append(listener.accept()[0])
    """
)


@pytest.fixture(scope="module")
def silent_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    script = tmp_path_factory.mktemp("silent") / "silent.py"
    script.write_text(SILENT_SERVER)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(port)])
    try:
        deadline = time.monotonic() + 10
        while not _accepts(port):
            assert proc.poll() is None and time.monotonic() < deadline, "the silent server did not start"
            time.sleep(0.02)
        yield port
    finally:
        _stop(proc)


def test_a_silent_server_is_named_with_the_wait_never_an_empty_reason(silent_port: int, tmp_path: Path) -> None:
    # Given a URL whose port accepts connections and never answers, and a 1 s bound on every call
    url = f"redis://:{SECRET}@127.0.0.1:{silent_port}/0"
    case = Case(url, False, rf"connected to 127\.0\.0\.1:{silent_port}, but no reply within 1s")
    options = {"broker_options.timeout": 1.0, "broker_options.socket_timeout": 1.0}

    # When a job is enqueued / Then BrokerUnavailable names the server and the wait (it may be a busy Redis: retried)
    app = Bananas(broker=url, overrides=options, env={})

    @app.job("touch")
    def touch() -> str:
        return "touched"

    try:
        with pytest.raises(BrokerUnavailable) as info:
            app.enqueue("touch")
    finally:
        app.close()
    assert type(info.value) is BrokerUnavailable
    _one_line(str(info.value), case.message("redis broker", "connect"), case)
    broker = RedisBroker(url, RedisOptions(timeout=1.0))
    try:
        with pytest.raises(BrokerUnavailable) as info:
            broker.enqueue_sync([Envelope("a", "q", b"body")])
    finally:
        broker._close_sync()
    _one_line(str(info.value), case.message("redis broker", "enqueue"), case)

    # And `bananas queues` prints the same line and exits 1
    (tmp_path / "bananas.toml").write_text(f'broker = "{url}"\n[broker_options]\ntimeout = 1.0\nsocket_timeout = 1.0\n')
    result = _bananas(tmp_path, "queues")
    assert result.returncode == 1, result.stderr
    _error_line(result, case)


# -- the mapping itself (no I/O) ---------------------------------------------------------------------------------------
@settings(deadline=None)  # a loaded CI machine: the first example may be slow
@given(st.binary(min_size=1, max_size=200))
def test_an_excerpt_of_any_reply_is_one_short_quoted_line(data: bytes) -> None:
    text = _excerpt(data)
    assert "\n" not in text and "\r" not in text
    assert len(text) <= 2 + 5 * 41  # quotes and at most 41 characters, each escaped to at most 5
    assert text[0] in "'\""


@settings(deadline=None)
@given(
    st.sampled_from([OSError, RuntimeError, TimeoutError, ConnectionResetError, ValueError]),
    st.text(max_size=80),
)
def test_a_cause_is_never_empty_and_always_one_line(kind: type[Exception], text: str) -> None:
    cause = cause_of(kind(text), "redis://127.0.0.1:6379/0", connect_timeout=5.0, reply_timeout=10.0)
    assert cause.text.strip() and "\n" not in cause.text and "\r" not in cause.text


@settings(deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="@/:%#?"),
               min_size=4, max_size=30), st.booleans())
def test_the_message_never_holds_the_password(password: str, permanent: bool) -> None:
    url = f"redis://user:{password}@127.0.0.1:6379/0"
    cause = Cause("connection refused: nothing listens on 127.0.0.1:6379 (is Redis running on this port?)", permanent)
    message = str(unavailable("redis broker", url, "connect", cause))
    assume(password not in message.replace(redact_url(url), ""))
    assert password not in message
    assert isinstance(unavailable("redis broker", url, "connect", cause), BrokerMisconfigured) is permanent


# -- the docs ---------------------------------------------------------------------------------------------------------
def test_the_troubleshooting_example_runs_and_prints_what_the_doc_says(tmp_path: Path) -> None:
    # Given the Python example of docs/TROUBLESHOOTING_CONNECTIONS.md
    text = DOC.read_text(encoding="utf-8")
    (source,) = EXAMPLE.findall(text)
    (tmp_path / "example.py").write_text(source)
    if _accepts(1):
        pytest.skip("something listens on 127.0.0.1:1 here; the example needs that port closed")

    # When it runs / Then it prints the line the doc shows, without the password
    result = _bananas_python(tmp_path, "example.py")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    printed = result.stdout.strip()
    assert printed == (
        "broker down, try again later: redis broker redis://:***@127.0.0.1:1/0 unavailable during connect: "
        "connection refused: nothing listens on 127.0.0.1:1 (is Redis running on this port?)"
    )
    assert " ".join(printed.split()) in " ".join(text.split()).replace("`", "")


def _bananas_python(folder: Path, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, script], cwd=folder, env=_env(folder), capture_output=True, text=True, timeout=60
    )
