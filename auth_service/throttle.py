"""Throttles for signing in and signing up, counted in NATS KV so every replica agrees.

What is limited (settings in `auth_service.config`), per *client network* (an IPv4 address
or an IPv6 /64, since one IPv6 client holds a whole /64):
- one email from one network (the "pair"): refused (429) after a few failures in the
  window, so guessing one account's password from one place stops quickly;
- one network across emails: refused after more failures (password spraying);
- one email from everywhere: never refused, so knowing an email is not enough to lock its
  owner out; instead, once the email has many recent failures, each attempt for it waits
  (doubling, capped at a few seconds) before its password is checked;
- sign-ups (password or Google) per network.

How it counts: each key holds the times of recent attempts, a sliding-window log in KV
(`terra.records.rate_limits`: `Window`, `AttemptLogs`), appended to by revision-checked writes so N
concurrent attempts are N increments and at most `limit` of them get through. Sign-in
attempts are counted *before* the password is checked: a failure keeps its count, a
success takes it back and forgives the pair. A refused attempt is counted nowhere and costs
no hashing.

Append-only records (a key per attempt) would avoid write races but need a key listing to
count on every attempt.

Keys are subject tokens that name no email or address: keyed hashes (HMAC) under a secret
only auth_service holds. A missing client address (only internal callers send none; the
gateway always names one) skips the per-network limits; the email's slow-down still applies.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from auth_service.domain import AuthError, RateLimited
from contracts.auth import AuthErrorCode
from contracts.topology import LOGIN_THROTTLE_KV, SIGNUP_THROTTLE_KV
from terra.records.rate_limits import AttemptLogs, Window
from terra.records.store import KeptChanging

log = logging.getLogger(__name__)

_DIGEST_HEX = 32  # 128 bits of HMAC-SHA256: a key-safe token


class TooManySignups(AuthError):
    def __init__(self, retry_after_s: int):
        super().__init__(
            AuthErrorCode.RATE_LIMITED,
            "Too many accounts were created from your network; try again later.",
            retry_after_s=retry_after_s,
        )


# --- pure rules ------------------------------------------------------------------------------


def client_network(address: str) -> str:
    """What one client controls: an IPv4 address, or the /64 of an IPv6 one."""
    text = address.strip().lower()
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def key_token(secret: bytes, *parts: str) -> str:
    """A stable, key-safe name for `parts` that does not reveal them without `secret`."""
    message = "\0".join(parts).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:_DIGEST_HEX]


@dataclass(frozen=True)
class Slowdown:
    """Attempts for one email wait once it has `after` recent failures: `first_delay_s`,
    doubling with each further failure, up to `max_delay_s`."""

    after: int
    first_delay_s: float
    max_delay_s: float
    window_s: float

    def __post_init__(self) -> None:
        if not 0 < self.first_delay_s <= self.max_delay_s:
            raise ValueError("need 0 < first_delay_s <= max_delay_s")

    def delay_s(self, earlier: int) -> float:
        """The wait of an attempt that finds `earlier` attempts in the window."""
        if earlier < self.after:
            return 0.0
        steps = min(earlier - self.after, 64)
        return min(self.max_delay_s, self.first_delay_s * 2**steps)

    @property
    def memory(self) -> int:
        """How many attempts the log keeps: even one fewer still gives the capped delay,
        so a full log need not be written again while the email is under attack."""
        doublings = math.ceil(math.log2(self.max_delay_s / self.first_delay_s))
        return self.after + doublings + 1

    @property
    def log_window(self) -> Window:
        """The email's log: its `memory` latest attempts within the window."""
        return Window(self.memory, self.window_s)

    def delay_for(self, times: Sequence[float], now: float) -> float:
        return self.delay_s(len(self.log_window.recent(times, now)))

    def admit(self, times: Sequence[float], now: float) -> list[float] | None:
        """The log with an attempt at `now` added, or None when it is full (leave it)."""
        return self.log_window.admit(times, now)


def without(times: Sequence[float], at: float) -> list[float] | None:
    """The log with one attempt at `at` taken back, or None when it holds none."""
    if at not in times:
        return None
    remaining = list(times)
    remaining.remove(at)
    return remaining


def forgiven(times: Sequence[float], at: float) -> list[float] | None:
    """The log after a success at `at`: attempts up to it are forgiven; None: nothing to."""
    remaining = [t for t in times if t > at]
    return None if len(remaining) == len(times) else remaining


# --- sign-in ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginAttempt:
    """An admitted sign-in attempt: the logs that hold its time, and how long it waits."""

    at: float
    delay_s: float
    pair_key: str | None = None
    address_key: str | None = None
    email_key: str | None = None  # None when the email's log was full and left as it was


class LoginThrottle:
    def __init__(
        self,
        kv: KeyValue,
        *,
        key_secret: bytes,
        window_s: float,
        max_per_pair: int,
        max_per_address: int,
        slowdown_after: int,
        slowdown_first_delay_s: float,
        slowdown_max_delay_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._logs = AttemptLogs(kv)
        self._secret = key_secret
        self._pair = Window(max_per_pair, window_s)
        self._address = Window(max_per_address, window_s)
        self._slowdown = Slowdown(
            slowdown_after, slowdown_first_delay_s, slowdown_max_delay_s, window_s
        )
        self._clock = clock

    @classmethod
    async def open(cls, js: JetStreamContext, **settings) -> LoginThrottle:
        return cls(await js.key_value(LOGIN_THROTTLE_KV.bucket), **settings)

    def keys(self, email: str, address: str | None) -> tuple[str | None, str | None, str]:
        """The pair's, the network's and the email's keys (no network: no first two)."""
        email_key = f"login.email.{key_token(self._secret, 'email', email)}"
        if not address:
            return None, None, email_key
        network = client_network(address)
        return (
            f"login.pair.{key_token(self._secret, 'pair', email, network)}",
            f"login.addr.{key_token(self._secret, 'addr', network)}",
            email_key,
        )

    async def admit(self, email: str, address: str | None) -> LoginAttempt:
        """Count an attempt before its password is checked, or raise `RateLimited` (then
        nothing is counted). `email` is normalised by the caller."""
        now = self._clock()
        pair_key, address_key, email_key = self.keys(email, address)
        if pair_key and address_key:
            await self._take(pair_key, self._pair, now)
            try:
                await self._take(address_key, self._address, now)
            except RateLimited:
                await self._give_back(pair_key, now)
                raise
        try:
            seen, written = await self._logs.change(
                email_key, lambda times: self._slowdown.admit(times, now)
            )
            delay = self._slowdown.delay_for(seen, now)
        except KeptChanging:
            # Too many attempts for this email at once to count them: it is under attack.
            delay, written = self._slowdown.max_delay_s, False
        return LoginAttempt(
            at=now,
            delay_s=delay,
            pair_key=pair_key,
            address_key=address_key,
            email_key=email_key if written else None,
        )

    async def succeeded(self, attempt: LoginAttempt) -> None:
        """The password was right: the pair's failures are forgiven, and the attempt
        counts nowhere (the email's other failures stay: they may be an attacker's)."""
        if attempt.pair_key:
            await self._best_effort(attempt.pair_key, lambda t: forgiven(t, attempt.at))
        for key in (attempt.address_key, attempt.email_key):
            if key:
                await self._give_back(key, attempt.at)

    async def _take(self, key: str, window: Window, now: float) -> None:
        try:
            seen, written = await self._logs.change(key, lambda times: window.admit(times, now))
        except KeptChanging:
            log.warning("login throttle key contended; refusing the attempt")
            raise RateLimited(1) from None
        if not written:
            raise RateLimited(window.retry_after(seen, now) or 1)

    async def _give_back(self, key: str, at: float) -> None:
        await self._best_effort(key, lambda times: without(times, at))

    async def _best_effort(
        self, key: str, change: Callable[[list[float]], list[float] | None]
    ) -> None:
        try:
            await self._logs.change(key, change)
        except KeptChanging:
            log.warning("login throttle key contended; an attempt stays counted")


# --- sign-up ---------------------------------------------------------------------------------


class SignupThrottle:
    """Sign-ups per client network; every attempt that passes the password policy counts,
    whatever its outcome (a taken email tells the caller something, too)."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        key_secret: bytes,
        window_s: float,
        max_per_address: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._logs = AttemptLogs(kv)
        self._secret = key_secret
        self._window = Window(max_per_address, window_s)
        self._clock = clock

    @classmethod
    async def open(cls, js: JetStreamContext, **settings) -> SignupThrottle:
        return cls(await js.key_value(SIGNUP_THROTTLE_KV.bucket), **settings)

    def key(self, address: str) -> str:
        return f"signup.addr.{key_token(self._secret, 'signup', client_network(address))}"

    async def admit(self, address: str | None) -> None:
        """Count a sign-up, or raise `TooManySignups` (then nothing is counted)."""
        if not address:
            return
        now = self._clock()
        try:
            seen, written = await self._logs.change(
                self.key(address), lambda times: self._window.admit(times, now)
            )
        except KeptChanging:
            raise TooManySignups(1) from None
        if not written:
            raise TooManySignups(self._window.retry_after(seen, now) or 1)
