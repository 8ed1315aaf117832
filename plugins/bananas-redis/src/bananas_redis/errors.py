"""Why a Redis connection failed, in words an operator can act on, and whether retrying can help.

Shared by the broker and the result backend. :func:`cause_of` reads an exception (and the ``OSError`` or
``ssl.SSLError`` redis-py chained under it) without I/O; :func:`explain` adds, only where the exception alone is
ambiguous, one short probe of the server (a raw ``PING`` on a plain socket, then a TLS handshake): it tells an HTTP
server from Redis, a plain Redis port behind a ``rediss://`` URL (whose TLS handshake merely times out) and a TLS
port behind a ``redis://`` URL (which resets the connection). :func:`unavailable` turns the cause into the one-line
error, naming the URL with its password redacted:

* transient causes (connection refused, unknown host, timeouts, a reset by a plain Redis, ``LOADING``) raise
  :class:`~bananas.errors.BrokerUnavailable` ``"<kind> <url> unavailable during <what>: <cause>"``; a waiting
  worker retries them;
* permanent causes (wrong password or ACL user, ``NOPERM``, not a Redis server, TLS mismatch or a certificate
  that does not verify) raise :class:`~bananas.errors.BrokerMisconfigured` ``"<kind> <url> unusable (<what>):
  <cause>"``: retrying cannot help, so a worker fails at once.

The messages and what to check for each are in ``docs/TROUBLESHOOTING_CONNECTIONS.md``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import Iterator

import attrs
from redis.connection import parse_url
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    InvalidResponse,
    NoPermissionError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bananas.plugin_api import BrokerMisconfigured, BrokerUnavailable, redact_url

__all__ = ["Cause", "cause_of", "explain", "explain_async", "is_refusal", "unavailable"]

_PING = b"*1\r\n$4\r\nPING\r\n"
_RESP_TYPES = b"+-:$*_,#!=(%~>|"  # the first byte of every RESP2/RESP3 reply
_TLS_RECORD = (0x15, 0x16)  # alert, handshake: what a TLS server sends back to plain bytes
_EXCERPT = 40
_PROBE_TIMEOUT = 1.0  # seconds each probe step may take (connect, reply, handshake)
_CLOSED = ("connection closed by server", "connection lost", "connection reset")


@attrs.frozen
class Cause:
    """``text``: what went wrong, one line, never empty and never the password; ``permanent``: retrying cannot
    help (a worker waiting for the broker fails at once)."""

    text: str
    permanent: bool = False


@attrs.frozen
class _Target:
    host: str
    port: int
    tls: bool
    user: str | None
    password: bool

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _target(url: str) -> _Target:
    scheme = url.partition("://")[0].lower()
    if "+" in scheme:  # redis+cluster:// and redis+sentinel://: the first seed or sentinel stands for the deployment
        host_list = url.partition("://")[2].split("/", 1)[0]
        userinfo, _, hosts = host_list.rpartition("@")
        url = f"{scheme.partition('+')[0]}://{userinfo + '@' if userinfo else ''}{hosts.split(',')[0]}"
    try:
        parts = parse_url(url)
    except ValueError:
        parts = {}
    return _Target(
        host=str(parts.get("host") or "localhost"),
        port=int(parts.get("port") or 6379),
        tls=url.lower().startswith("rediss:"),
        user=parts.get("username") or None,
        password=bool(parts.get("password")),
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions under it (``__cause__``, else ``__context__``), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


def _text(exc: BaseException) -> str:
    """The exception's text on one line, or its type name when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _excerpt(data: bytes) -> str:
    """The first non-blank line of ``data`` as a quoted, escaped excerpt: ``'HTTP/1.1 400 Bad Request'``."""
    line = next((part.strip() for part in data.splitlines() if part.strip()), data)
    text = line.decode("utf-8", "backslashreplace")
    if len(text) > _EXCERPT:
        text = text[:_EXCERPT] + "…"
    return repr(text)


def _auth(exc: BaseException, target: _Target) -> Cause:
    text = _text(exc)
    low = text.lower()
    if "called without any password" in low or "no password is set" in low:
        return Cause(
            "authentication failed: the URL gives a password but the server has none set (remove it from the URL, "
            "or configure requirepass or an ACL user on the server)",
            True,
        )
    if not target.password:
        return Cause(
            "authentication required: the server has a password and the URL gives none "
            "(redis://:PASSWORD@host or redis://USER:PASSWORD@host)",
            True,
        )
    code = getattr(exc, "status_code", None) or "WRONGPASS"
    text = text.rstrip(".")
    who = f"user {target.user!r}" if target.user else "the default user"
    return Cause(
        f"authentication failed: {code} {text} (the password is wrong for {who}, or there is no such ACL user; "
        "check both in the URL)",
        True,
    )


def _tls_failure(error: ssl.SSLError) -> Cause:
    """A certificate that does not verify, or a protocol failure (version, alert), is permanent; a handshake cut
    short (EOF, reset) is transient unless the probe finds a plain server there."""
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = error.verify_message or _text(error)
        return Cause(
            f"TLS handshake failed: certificate verify failed: {detail} (set ssl_ca_certs to the CA that signed the "
            "server's certificate, or ssl_cert_reqs)",
            True,
        )
    reason = getattr(error, "reason", None) or _text(error)
    if isinstance(error, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError):
        return Cause(f"TLS handshake cut short: {reason}")
    if "CERTIFICATE_REQUIRED" in str(reason).upper():
        return Cause(f"TLS handshake failed: {reason} (the server wants a client certificate: set ssl_certfile and "
                     "ssl_keyfile)", True)
    return Cause(f"TLS handshake failed: {reason}", True)


def _connect_timed_out(exc: BaseException) -> bool:
    """redis-py's "Timeout connecting to server": the TCP connect or (for rediss://) the TLS handshake timed out."""
    return any(isinstance(e, RedisTimeoutError) and "connecting" in str(e).lower() for e in _chain(exc))


def _closed(exc: BaseException) -> bool:
    """The server closed or reset the connection (a TLS port does that to plain bytes)."""
    return _first(exc, ConnectionResetError) is not None or any(m in str(exc).lower() for m in _CLOSED)


def cause_of(exc: BaseException, url: str, *, connect_timeout: float, reply_timeout: float) -> Cause:
    """The cause of ``exc`` (a redis-py or OS error met while talking to ``url``) without any I/O."""
    target = _target(url)
    auth = _first(exc, AuthenticationError)
    if auth is not None:
        return _auth(auth, target)
    noperm = _first(exc, NoPermissionError)
    if noperm is not None:
        return Cause(
            f"permission denied: NOPERM {_text(noperm)} (grant this ACL user the commands and keys Bananas uses, "
            "e.g. ACL SETUSER <user> ~<prefix>:* ~{<prefix>:* +@all)",
            True,
        )
    invalid = _first(exc, InvalidResponse)
    if invalid is not None:
        return Cause(f"not a Redis server ({_text(invalid)})", True)
    tls_error = _first(exc, ssl.SSLError)
    if tls_error is not None:
        return _tls_failure(tls_error)  # type: ignore[arg-type]
    if _first(exc, ConnectionRefusedError) is not None or any(
        getattr(e, "errno", None) == errno.ECONNREFUSED for e in _chain(exc)
    ):
        return Cause(f"connection refused: nothing listens on {target.where} (is Redis running on this port?)")
    dns = _first(exc, socket.gaierror)
    if dns is not None:
        detail = dns.strerror or _text(dns)  # type: ignore[attr-defined]
        return Cause(f"unknown host {target.host!r} ({detail}: check the host name, or the DNS)")
    if _first(exc, BusyLoadingError) is not None:
        return Cause("Redis is loading its dataset into memory (LOADING); it answers once that is done")
    if _connect_timed_out(exc):
        return Cause(f"no answer from {target.where} within {connect_timeout:g}s (connect_timeout)")
    if _first(exc, (RedisTimeoutError, TimeoutError)) is not None:
        return Cause(f"connected to {target.where}, but no reply within {reply_timeout:g}s")
    if _closed(exc):
        return Cause(f"the server at {target.where} closed the connection")
    if isinstance(exc, RedisConnectionError | OSError):
        return Cause(_text(exc))
    return Cause(f"{type(exc).__name__}: {_text(exc)}" if str(exc).strip() else type(exc).__name__)


def is_refusal(exc: BaseException) -> bool:
    """The server answered, but not as a usable Redis: authentication, ACL or protocol (a connection failure all
    the same, never a command's own error)."""
    return _first(exc, (AuthenticationError, NoPermissionError, InvalidResponse)) is not None


# -- the probe ------------------------------------------------------------------------------------------------------
def _probe_plain(target: _Target, timeout: float) -> tuple[str, bytes]:
    """Send a RESP ``PING`` on a plain socket: ``("redis" | "tls" | "other" | "closed" | "silent" | "down", reply)``."""
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError:
        return "down", b""
    with sock:
        try:
            sock.sendall(_PING)
            data = sock.recv(128)
        except TimeoutError:
            return "silent", b""
        except OSError:
            return "closed", b""
    if not data:
        return "closed", b""
    if data[0] in _TLS_RECORD and data[1:2] == b"\x03":
        return "tls", data
    if data[:1] in (bytes([b]) for b in _RESP_TYPES):
        return "redis", data
    return "other", data


def _probe_tls(target: _Target, timeout: float) -> bool:
    """Whether a TLS handshake (no certificate check: only the protocol matters here) succeeds."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((target.host, target.port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=target.host):
                return True
    except (OSError, ValueError):
        return False


def _needs_probe(exc: BaseException, target: _Target) -> bool:
    if _first(exc, (AuthenticationError, NoPermissionError, ssl.SSLCertVerificationError)) is not None:
        return False
    if _first(exc, InvalidResponse) is not None:
        return True
    if target.tls:  # a plain port behind rediss:// times out in the handshake, or fails it on plain bytes
        return _first(exc, ssl.SSLError) is not None or _connect_timed_out(exc)
    return _closed(exc)  # a TLS port behind redis:// closes (resets) the plain connection


def _probed(cause: Cause, target: _Target, timeout: float) -> Cause:
    kind, data = _probe_plain(target, timeout)
    if kind == "other":
        prefix = f"TLS handshake failed: {target.where} speaks neither TLS nor Redis" if target.tls else (
            "not a Redis server")
        return Cause(f"{prefix} (got {_excerpt(data)} from {target.where}; check the host and port)", True)
    if target.tls:
        if kind == "redis":
            return Cause(
                f"TLS handshake failed: {target.where} speaks plain Redis, not TLS (use redis://, or rediss:// with "
                "the server's tls-port)",
                True,
            )
        return cause
    if kind == "tls" or (kind == "closed" and _probe_tls(target, timeout)):
        return Cause(
            f"the server at {target.where} expects TLS ("
            + ("it answered a plain connection with a TLS record" if kind == "tls" else
               "it closed a plain connection and accepts a TLS handshake")
            + "): use rediss://",
            True,
        )
    if kind == "redis" and cause.permanent:  # a garbled reply, yet a Redis answers PING: a fault, not a wrong server
        return Cause(cause.text.replace("not a Redis server", f"a garbled reply from {target.where}", 1))
    return cause


def explain(exc: BaseException, url: str, *, connect_timeout: float, reply_timeout: float) -> Cause:
    """:func:`cause_of`, plus a probe of the server where that alone is ambiguous (blocking: a plain connection and
    at most one TLS handshake, each bounded by ``min(connect_timeout, 1 s)``)."""
    cause = cause_of(exc, url, connect_timeout=connect_timeout, reply_timeout=reply_timeout)
    target = _target(url)
    if not _needs_probe(exc, target):
        return cause
    return _probed(cause, target, min(connect_timeout, _PROBE_TIMEOUT))


async def explain_async(exc: BaseException, url: str, *, connect_timeout: float, reply_timeout: float) -> Cause:
    """:func:`explain` for event-loop code (a probe runs in a thread)."""
    cause = cause_of(exc, url, connect_timeout=connect_timeout, reply_timeout=reply_timeout)
    target = _target(url)
    if not _needs_probe(exc, target):
        return cause
    return await asyncio.to_thread(_probed, cause, target, min(connect_timeout, _PROBE_TIMEOUT))


def unavailable(kind: str, url: str, what: str, cause: Cause) -> BrokerUnavailable:
    """The one-line error: :class:`BrokerMisconfigured` for a permanent cause, else :class:`BrokerUnavailable`."""
    shown = redact_url(url)
    if cause.permanent:
        return BrokerMisconfigured(f"{kind} {shown} unusable ({what}): {cause.text}")
    return BrokerUnavailable(f"{kind} {shown} unavailable during {what}: {cause.text}")
