"""Outbound HTTP safety: webhook URLs and Web Push endpoints are chosen by users, so the
notifier must not become a way into the operator's network (SSRF).

`refusal` is the pure rule on one address. `check_url` applies it when a URL is
registered; `GuardedResolver` applies it again to the addresses a request is about to
connect to (a name may resolve elsewhere by then: DNS rebinding), and `egress_session`'s
middleware to IP-literal hosts, which aiohttp connects to without asking the resolver.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_middlewares import ClientHandlerType
from yarl import URL

from notifier_service.config import NotifierSettings
from notifier_service.delivery import Outcome, OutcomeKind, parse_retry_after
from terra.settings import Profile

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_S = 3.0  # a registration's lookup of the URL's host

# Allowed only where private targets are (the local profile, when asked): the networks of
# the operator's own machines. Link-local holds the cloud metadata services
# (169.254.169.254, and AWS's fd00:ec2::254 inside unique-local).
_PRIVATE = tuple(ipaddress.ip_network(net) for net in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "169.254.0.0/16", "fc00::/7", "fe80::/10",
    "64:ff9b:1::/48"))  # local-use NAT64: the operator's own translator
_METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated, yet some stacks route it


def refusal(address: Address, *, allow_loopback: bool, allow_private: bool) -> str | None:
    """Why a request must not go to `address`, or None when it may."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        why = refusal(embedded, allow_loopback=allow_loopback, allow_private=allow_private)
        return f"{why} (embedded in {address})" if why else None
    if address.is_unspecified:
        return "unspecified address"
    if address.is_loopback:
        return None if allow_loopback else "loopback address"
    if address.is_multicast:
        return "multicast address"
    if any(address in network for network in _PRIVATE):
        if allow_private:
            return None
        if address in _METADATA:
            return "cloud metadata address"
        if address.is_link_local:
            return "link-local address"
        return "private address"
    if not address.is_global:
        return "reserved address"  # broadcast, 240/4, documentation, benchmarking, ...
    return None


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to (IPv4-mapped, NAT64, 6to4,
    IPv4-compatible), if any."""
    if not isinstance(address, ipaddress.IPv6Address) or address.is_loopback or (
            address.is_unspecified):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def _address(host: str) -> Address | None:
    """`host` as an IP address (brackets and a zone id allowed), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class EgressPolicy:
    allow_loopback: bool = False
    allow_private: bool = False
    require_https: bool = True

    @classmethod
    def of(cls, settings: NotifierSettings) -> EgressPolicy:
        return cls(allow_loopback=settings.loopback_targets_allowed,
                   allow_private=settings.private_targets_allowed,
                   require_https=settings.profile is Profile.PRODUCTION)

    def refusal(self, address: Address) -> str | None:
        return refusal(address, allow_loopback=self.allow_loopback,
                       allow_private=self.allow_private)


async def check_url(url: str, policy: EgressPolicy) -> str | None:
    """Why `url` cannot be a webhook or push endpoint, or None when it can: http(s) only
    (https when required), no credentials in it, and every address its host resolves to
    allowed (any refused one refuses it: the resolver may hand out either later)."""
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        return "the URL contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return "the URL must be http or https"
    if policy.require_https and scheme != "https":
        return "the URL must be https"
    if parts.username is not None or parts.password is not None:
        return "the URL must not carry credentials"
    host = parts.hostname
    if not host:
        return "the URL has no host"
    if (literal := _address(host)) is not None:
        why = policy.refusal(literal)
        return f"{host} is a {why}" if why else None
    try:
        # Bounded: a name server that never answers must not hold the request (and a
        # thread of the loop's executor) for the resolver's own minutes.
        infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
            host, port or (443 if scheme == "https" else 80), type=socket.SOCK_STREAM),
            RESOLVE_TIMEOUT_S)
    except (socket.gaierror, UnicodeError):
        return f"{host} does not resolve"
    except TimeoutError:
        return f"{host} did not resolve within {RESOLVE_TIMEOUT_S:g} s"
    for info in infos:
        address = _address(str(info[4][0]))
        if address is None or (why := policy.refusal(address)):
            # The kind of address only: the user must not learn what an internal name
            # resolves to (the log keeps it, for the operator).
            log.info("URL refused", extra={"host": host, "address": str(info[4][0])})
            return f"{host} resolves to a {why or 'address that cannot be read'}"
    return None


class RefusedAddress(aiohttp.ClientError):
    """A request whose host is an address the policy refuses."""


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, less the addresses the policy refuses: the address a request
    connects to is checked when it connects, not only when the URL was registered. With
    nothing left it raises OSError, which aiohttp reports as `ClientConnectorDNSError`."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        refused: list[str] = []
        for result in found:
            address = _address(result["host"])
            why = "unreadable address" if address is None else self.policy.refusal(address)
            if why:
                refused.append(f"{result['host']} ({why})")
            else:
                kept.append(result)
        if not kept:
            # errno None and the reason as strerror: aiohttp's error message shows it.
            raise OSError(None, f"refused: {host} resolves only to refused addresses: "
                          f"{', '.join(refused)}" if refused else f"{host}: no address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def literal_refusal(url: URL | str, policy: EgressPolicy) -> str | None:
    """Why a request to `url` must not go out when its host is an IP literal (aiohttp
    connects to literals without its resolver); None for names (the resolver decides)."""
    host = URL(url).host if isinstance(url, str) else url.host
    if host is None:
        return "the URL has no host"
    address = _address(host)
    if address is None:
        return None
    why = policy.refusal(address)
    return f"{host} is a {why}" if why else None


def egress_session(policy: EgressPolicy, timeout_s: float, *,
                   limit: int = 100) -> aiohttp.ClientSession:
    """The one session every send goes through: the guarded resolver, IP literals checked
    before each request, no proxy from the environment, no cookies kept between targets
    (a session is shared by every user), a total timeout. Callers pass
    `allow_redirects=False`: a redirect could lead anywhere."""

    async def refuse_literals(request: aiohttp.ClientRequest,
                              handler: ClientHandlerType) -> aiohttp.ClientResponse:
        if why := literal_refusal(request.url, policy):
            raise RefusedAddress(f"refused: {why}")
        return await handler(request)

    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy), limit=limit)
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=timeout_s), middlewares=(refuse_literals,))


# --- one request, as every sender makes it -----------------------------------------------

# Answers worth reading past their status (Expo's tickets, FCM's errors) are small; the
# rest of a big body is not read at all.
READ_LIMIT = 64 * 1024
# The answers whose `Retry-After` is honoured (Standard Webhooks' advice).
RETRY_AFTER_STATUSES = frozenset({429, 502, 503})


@dataclass(frozen=True)
class Answer:
    """What the remote end said: status, headers, at most `READ_LIMIT` bytes of body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    duration_ms: int

    def retry(self, error: str | None = None) -> Outcome:
        """RETRY for this answer, with its `Retry-After` where honoured."""
        retry_after = (parse_retry_after(self.headers.get("Retry-After"))
                       if self.status in RETRY_AFTER_STATUSES else None)
        return Outcome(OutcomeKind.RETRY, status_code=self.status, error=error,
                       retry_after_s=retry_after, duration_ms=self.duration_ms)

    def outcome(self, kind: OutcomeKind, error: str | None = None) -> Outcome:
        """DELIVERED, GONE or REFUSED for this answer (RETRY: `retry`)."""
        return Outcome(kind, status_code=self.status, error=error,
                       duration_ms=self.duration_ms)

    def otherwise(self, error: str | None = None) -> Outcome:
        """What a push service's answer comes to when it said nothing more specific: a
        redirect or an overload (429, 5xx) is tried again, anything else (400, 401, 403,
        413) refuses this message for good. `error` defaults to the body's start."""
        error = error or self.excerpt() or None
        if (redirect := self.redirect) is not None:
            return redirect
        if self.status == 429 or self.status >= 500:
            return self.retry(error)
        return self.outcome(OutcomeKind.REFUSED, error)

    @property
    def redirect(self) -> Outcome | None:
        """RETRY when the answer is a redirect (never followed: it could lead anywhere)."""
        return self.retry(REDIRECT_ERROR) if 300 <= self.status < 400 else None

    def excerpt(self, limit: int = 200) -> str:
        return self.body[:limit].decode("utf-8", "replace").strip()


REDIRECT_ERROR = "redirect not followed"


async def post(session: aiohttp.ClientSession, url: str, *, body: bytes,
               headers: Mapping[str, str]) -> Answer | Outcome:
    """POST `body` to `url` without following redirects: the answer, or a RETRY `Outcome`
    when none came (refused address, connection error, timeout)."""
    started = time.monotonic()
    try:
        async with session.post(url, data=body, headers=dict(headers),
                                allow_redirects=False) as response:
            content = await _read_capped(response, READ_LIMIT)
            return Answer(response.status, response.headers, content, _ms_since(started))
    except TimeoutError:
        return Outcome(OutcomeKind.RETRY, error="timed out",
                       duration_ms=_ms_since(started))
    except (aiohttp.ClientError, OSError) as exc:
        return Outcome(OutcomeKind.RETRY, error=_describe(exc),
                       duration_ms=_ms_since(started))


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit and (chunk := await response.content.read(limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
