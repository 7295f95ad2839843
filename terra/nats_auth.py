"""NATS credentials: an NKEY per identity, and the server's `accounts` block rendered from
the permission matrix (`contracts.permissions`).

A credentials directory holds one seed file per identity (`<identity>.nk`, mode 0600: the
secret a service is given) and `keys.json` (the public keys the server accepts, several
per identity while a key is being rotated). `accounts.conf` is generated from both and
included by the server's configuration. NKEYs: the server stores only public keys, and a
client proves it holds the seed by signing the server's nonce.

Rotation without downtime: `rotate` writes a new seed and lists both public keys; reload
the servers, restart the identity's processes (they read the new seed), then `retire` the
old key and reload again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from contracts.permissions import (
    ACCOUNT,
    ALL_IDENTITIES,
    OPERATOR,
    SYSTEM,
    identities,
)
from terra.errors import ConfigurationError

KEYS_FILE = "keys.json"
ACCOUNTS_FILE = "accounts.conf"


def new_user_key() -> tuple[str, str]:
    """(seed "SU…", public key "U…") of a fresh NATS user NKEY."""
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), nkeys.from_seed(bytearray(seed)).public_key.decode()


def public_key_of(seed: str) -> str:
    import nkeys

    return nkeys.from_seed(bytearray(seed.strip().encode())).public_key.decode()


@dataclass(frozen=True)
class Credentials:
    """A credentials directory: seeds, accepted public keys, the rendered accounts."""

    directory: Path

    def seed_file(self, identity: str) -> Path:
        return self.directory / f"{identity}.nk"

    @property
    def accounts_file(self) -> Path:
        return self.directory / ACCOUNTS_FILE

    def public_keys(self) -> dict[str, list[str]]:
        path = self.directory / KEYS_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    @classmethod
    def ensure(cls, directory: Path) -> Credentials:
        """Create the seeds that are missing (existing ones are kept: restarts reuse
        them), then render `accounts.conf`."""
        credentials = cls(directory)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        keys = credentials.public_keys()
        for identity in ALL_IDENTITIES:
            seed_file = credentials.seed_file(identity)
            if not seed_file.exists():
                seed, public = new_user_key()
                _write_secret(seed_file, seed)
                keys[identity] = [public]
            elif not keys.get(identity):
                keys[identity] = [public_key_of(seed_file.read_text())]
        credentials._save(keys)
        return credentials

    def rotate(self, identity: str) -> str:
        """A new seed for `identity`; its old public key stays accepted until `retire`."""
        self._check(identity)
        seed, public = new_user_key()
        keys = self.public_keys()
        keys[identity] = [*keys.get(identity, []), public]
        _write_secret(self.seed_file(identity), seed)
        self._save(keys)
        return public

    def retire(self, identity: str) -> list[str]:
        """Accept only the current seed's key for `identity`; returns the keys removed."""
        self._check(identity)
        current = public_key_of(self.seed_file(identity).read_text())
        keys = self.public_keys()
        removed = [key for key in keys.get(identity, []) if key != current]
        keys[identity] = [current]
        self._save(keys)
        return removed

    def _check(self, identity: str) -> None:
        if identity not in ALL_IDENTITIES:
            raise ConfigurationError(
                f"unknown identity {identity!r}; one of {', '.join(ALL_IDENTITIES)}")

    def _save(self, keys: dict[str, list[str]]) -> None:
        (self.directory / KEYS_FILE).write_text(json.dumps(keys, indent=2) + "\n")
        self.accounts_file.write_text(accounts_config(keys))


def accounts_config(keys: dict[str, list[str]]) -> str:
    """The server's `accounts` block: every identity's keys and allow-lists. Anonymous
    clients are refused (no `no_auth_user`, ever)."""
    lines = ["# Generated from contracts/permissions.py by terra.nats_auth: do not edit.",
             "accounts {", f"  {ACCOUNT} {{", "    jetstream: enabled", "    users: ["]
    for key in keys.get(OPERATOR, []):
        lines.append(f"      # {OPERATOR}: all of {ACCOUNT}")
        lines.append(f"      {json.dumps({'nkey': key})}")
    for name, identity in identities().items():
        publish, subscribe = identity.allowed
        permissions = {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
        if identity.allow_responses:
            permissions["allow_responses"] = True
        for key in keys.get(name, []):
            lines.append(f"      # {name}")
            lines.append(f"      {json.dumps({'nkey': key, 'permissions': permissions})}")
    lines += ["    ]", "  }"]
    system_keys = keys.get(SYSTEM, [])
    lines.append("  SYS { users: [ " + ", ".join(json.dumps({"nkey": k}) for k in system_keys)
                 + " ] }")
    lines += ["}", "system_account: SYS", ""]
    return "\n".join(lines)


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text + "\n")
