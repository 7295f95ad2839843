"""NATS credentials: a key per identity kept across restarts, rotation without downtime,
and a server configuration the real nats-server accepts, which never lets anyone in
anonymously."""

from __future__ import annotations

import json
import subprocess

import pytest

from contracts.permissions import ALL_IDENTITIES, OPERATOR, SERVICE_IDENTITIES, identities
from terra.nats.accounts import Credentials, accounts_config, public_key_of
from terra.ops.servers import find_binary


def test_every_identity_gets_a_secret_seed_and_restarts_keep_them(tmp_path):
    credentials = Credentials.ensure(tmp_path / "creds")
    seeds = {name: credentials.seed_file(name).read_text() for name in ALL_IDENTITIES}
    assert all(seed.startswith("SU") for seed in seeds.values())
    assert all(credentials.seed_file(n).stat().st_mode & 0o077 == 0 for n in ALL_IDENTITIES)
    again = Credentials.ensure(tmp_path / "creds")
    assert {name: again.seed_file(name).read_text() for name in ALL_IDENTITIES} == seeds
    keys = again.public_keys()
    assert all(keys[name] == [public_key_of(seeds[name])] for name in ALL_IDENTITIES)


def test_a_rotated_key_is_accepted_beside_the_old_one_until_retired(tmp_path):
    credentials = Credentials.ensure(tmp_path)
    old = credentials.public_keys()["gateway"]
    new = credentials.rotate("gateway")
    assert credentials.public_keys()["gateway"] == [*old, new]
    assert public_key_of(credentials.seed_file("gateway").read_text()) == new
    assert old[0] in credentials.accounts_file.read_text()  # both accepted meanwhile
    assert credentials.retire("gateway") == old
    assert credentials.public_keys()["gateway"] == [new]
    assert old[0] not in credentials.accounts_file.read_text()
    with pytest.raises(Exception, match="unknown identity"):
        credentials.rotate("mallory")


def test_the_config_names_every_service_with_its_own_inbox_and_no_anonymous_user(tmp_path):
    credentials = Credentials.ensure(tmp_path)
    text = accounts_config(credentials.public_keys())
    assert "no_auth_user" not in text
    for name in SERVICE_IDENTITIES:
        publish, subscribe = identities()[name].allowed
        assert f"_INBOX_{name}.>" in subscribe and "_INBOX.>" not in subscribe
        assert json.dumps(publish)[1:-1] in text  # its allow-list, as rendered
    assert f"# {OPERATOR}: all of TERRA" in text


def test_the_real_server_accepts_the_generated_config(tmp_path):
    credentials = Credentials.ensure(tmp_path)
    config = tmp_path / "server.conf"
    config.write_text(f'include "{credentials.accounts_file.name}"\nport: -1\n')
    checked = subprocess.run([find_binary("nats-server", "TERRA_NATS_SERVER_BIN"), "-t", "-c",
                              str(config)], capture_output=True, text=True, timeout=30,
                             check=False)
    assert checked.returncode == 0, checked.stderr + checked.stdout
