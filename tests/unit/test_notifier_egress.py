"""Which addresses and URLs the notifier may send to (SSRF rules), without the network."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver

from notifier_service.config import NotifierSettings
from notifier_service.egress import EgressPolicy, GuardedResolver, check_url, literal_refusal
from notifier_service.egress import refusal as egress_refusal
from terra.settings import Profile

PRODUCTION = EgressPolicy(allow_loopback=False, allow_private=False, require_https=True)
LOCAL = EgressPolicy(allow_loopback=True, allow_private=False, require_https=False)
LOCAL_PRIVATE = EgressPolicy(allow_loopback=True, allow_private=True, require_https=False)


def refusal(text: str, policy: EgressPolicy = PRODUCTION) -> str | None:
    return egress_refusal(ipaddress.ip_address(text), allow_loopback=policy.allow_loopback,
                          allow_private=policy.allow_private)


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"),
    ("192.168.1.1", "private"), ("100.64.0.1", "private"), ("100.127.255.255", "private"),
    ("fc00::1", "private"), ("fd12:3456::1", "private"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"),
    ("255.255.255.255", "reserved"), ("240.0.0.1", "reserved"), ("192.0.2.1", "reserved"),
    ("2001:db8::1", "reserved"),
    # IPv6 forms that carry an IPv4 address: the embedded one decides.
    ("::ffff:10.0.0.1", "private"), ("::ffff:169.254.169.254", "metadata"),
    ("64:ff9b::7f00:1", "loopback"), ("64:ff9b::a9fe:a9fe", "metadata"),
    ("2002:7f00:1::1", "loopback"), ("2002:c0a8:101::", "private"),
    ("64:ff9b:1::1", "private"),
])
def test_production_refuses_every_address_of_the_operators_networks(address, reason):
    assert reason in (refusal(address) or "")


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_are_allowed(address):
    assert refusal(address) is None


def test_the_local_profile_allows_loopback_and_private_only_when_asked():
    assert refusal("127.0.0.1", LOCAL) is None
    assert refusal("::ffff:127.0.0.1", LOCAL) is None
    assert "private" in refusal("10.0.0.1", LOCAL)
    assert "metadata" in refusal("169.254.169.254", LOCAL)
    for address in ("10.0.0.1", "172.16.0.1", "169.254.169.254", "fd00:ec2::254",
                    "100.64.0.1", "fc00::1", "fe80::1"):
        assert refusal(address, LOCAL_PRIVATE) is None, address


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "224.0.0.1", "ff02::1",
                                     "255.255.255.255", "240.0.0.1"])
def test_some_addresses_are_never_allowed(address):
    assert refusal(address, LOCAL_PRIVATE) is not None


def test_the_policy_follows_the_profile():
    local = EgressPolicy.of(NotifierSettings(profile=Profile.LOCAL))
    assert local == LOCAL
    asked = EgressPolicy.of(NotifierSettings(profile=Profile.LOCAL,
                                             notify_allow_private_targets=True))
    assert asked == LOCAL_PRIVATE
    # Production refuses every private address and loopback, whatever the flag says.
    # (Built unvalidated: production's own checks want keys this test does not need.)
    production = NotifierSettings.model_construct(profile=Profile.PRODUCTION,
                                                  notify_allow_private_targets=True)
    assert EgressPolicy.of(production) == PRODUCTION


@pytest.mark.parametrize("url, reason", [
    ("ftp://example.com/x", "http or https"),
    ("http://example.com/hook", "must be https"),
    ("https://user:pw@example.com/hook", "credentials"),
    ("https:///hook", "no host"),
    ("https://example.com:99999/", "not a valid URL"),
    ("https://example.com/a b", "whitespace"),
    ("https://127.0.0.1/hook", "loopback"),
    ("https://[::1]:8443/hook", "loopback"),
    ("https://169.254.169.254/latest/meta-data", "metadata"),
    ("https://[::ffff:10.0.0.1]/", "private"),
    ("https://localhost/hook", "loopback"),
    ("https://127.1/hook", "loopback"),  # a legacy form that resolves to 127.0.0.1
    ("https://name.invalid/hook", "does not resolve"),
])
async def test_check_url_refuses_with_a_reason(url, reason):
    assert reason in (await check_url(url, PRODUCTION) or "")


async def test_check_url_allows_what_the_local_profile_allows():
    assert await check_url("http://127.0.0.1:8080/hook", LOCAL) is None
    assert await check_url("http://localhost:8080/hook", LOCAL) is None
    assert await check_url("https://8.8.8.8/hook", PRODUCTION) is None
    assert "private" in await check_url("http://192.168.1.10/hook", LOCAL)


def test_literal_hosts_are_checked_names_left_to_the_resolver():
    assert "loopback" in literal_refusal("https://127.0.0.1/x", PRODUCTION)
    assert "loopback" in literal_refusal("https://[::1]/x", PRODUCTION)
    assert literal_refusal("https://localhost/x", PRODUCTION) is None
    assert literal_refusal("https://8.8.8.8/x", PRODUCTION) is None


class Answers(AbstractResolver):
    """A resolver answering fixed addresses (a rebinding DNS server, say)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": address, "port": port, "family": family,
                 "proto": 0, "flags": 0} for address in self.addresses]

    async def close(self):
        pass


async def test_the_resolver_drops_refused_addresses_at_connect_time():
    guarded = GuardedResolver(PRODUCTION, Answers("93.184.216.34", "127.0.0.1", "10.0.0.1"))
    kept = await guarded.resolve("rebinding.example", 443)
    assert [result["host"] for result in kept] == ["93.184.216.34"]


async def test_the_resolver_refuses_a_name_with_only_refused_addresses():
    guarded = GuardedResolver(PRODUCTION, Answers("169.254.169.254", "fe80::1%eth0"))
    with pytest.raises(OSError, match="metadata"):
        await guarded.resolve("rebinding.example", 443)
