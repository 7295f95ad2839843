"""The local profile's gateway listens on loopback only: its published development keys
never face a network, whether it binds itself or is handed a bound socket."""

from __future__ import annotations

import os
import socket

import pytest

from gateway.config import GatewaySettings
from gateway.server import refuse_public_listener
from terra.errors import ConfigurationError


def local(host: str = "127.0.0.1") -> GatewaySettings:
    return GatewaySettings(profile="local", host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost",
                                  "::ffff:127.0.0.1"])
def test_the_local_profile_listens_on_loopback(host):
    refuse_public_listener(local(host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5"])
def test_the_local_profile_refuses_to_listen_beyond_loopback(host):
    with pytest.raises(ConfigurationError) as refused:
        refuse_public_listener(local(host))
    message = str(refused.value)
    assert f"TERRA_HOST={host}" in message
    assert "TERRA_PROFILE=production" in message and "127.0.0.1" in message


def test_production_listens_where_it_is_told():
    settings = GatewaySettings(profile="production", host="0.0.0.0", nats_nkey_file="/x.nk",
                               nats_ca_file="/ca.pem", s3_access_key="real-access",
                               s3_secret_key="real-secret")
    refuse_public_listener(settings)


def test_a_handed_down_socket_counts_by_its_bound_address_and_stays_open():
    with socket.socket() as loopback, socket.socket() as everywhere:
        loopback.bind(("127.0.0.1", 0))
        everywhere.bind(("0.0.0.0", 0))
        # TERRA_HOST says loopback; the socket that would serve says otherwise.
        refuse_public_listener(local("127.0.0.1"), loopback.fileno())
        with pytest.raises(ConfigurationError, match="TERRA_LISTEN_FD"):
            refuse_public_listener(local("127.0.0.1"), everywhere.fileno())
        # Looking did not close what uvicorn is to serve on.
        os.fstat(loopback.fileno())
        assert loopback.getsockname()[0] == "127.0.0.1"


def test_a_handed_down_unix_socket_is_local(tmp_path):
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(tmp_path / "gateway.sock"))
        refuse_public_listener(local(), unix.fileno())
