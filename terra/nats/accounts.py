"""NATS credentials: an NKEY per identity, and the server's `accounts` block rendered from
the permission matrix (`contracts.permissions`): the JetStream account `TERRA` (the
operator's users, and an export of each subject some identity imports, to those
identities' accounts only), an account per identity (its keys, its imports, and the
allow-lists of its users), and `SYS`.

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
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from contracts.permissions import (
    ALL_IDENTITIES,
    JETSTREAM_ACCOUNT,
    OPERATOR,
    STREAMED_RESPONSE_THRESHOLD,
    SYSTEM,
    SYSTEM_ACCOUNT,
    Import,
    identities,
)
from terra.credentials import write_secret
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
                write_secret(seed_file, seed)
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
        write_secret(self.seed_file(identity), seed)
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
    """The server's `accounts` block. Anonymous clients are refused (no `no_auth_user`,
    ever); an account exports only what another imports, and only to that account."""
    everyone = identities()
    lines = ["# Generated from contracts/permissions.py by terra.nats.accounts: do not edit.",
             "accounts {"]
    exports = _exports(everyone.values())
    lines += _account(JETSTREAM_ACCOUNT, ["jetstream: enabled"],
                      [(f"{OPERATOR}: all of {JETSTREAM_ACCOUNT}", {"nkey": key})
                       for key in keys.get(OPERATOR, [])],
                      exports.get(JETSTREAM_ACCOUNT, []), [])
    for name, identity in everyone.items():
        publish, subscribe = identity.allowed
        permissions: dict = {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
        if identity.answers:
            permissions["allow_responses"] = True  # its replies go to the callers' inboxes
        users = [(name, {"nkey": key, "permissions": permissions}) for key in keys.get(name, [])]
        lines += _account(identity.account, [], users, exports.get(identity.account, []),
                          [_import_entry(i) for i in identity.imports])
    lines += _account(SYSTEM_ACCOUNT, [], [(SYSTEM, {"nkey": key})
                                           for key in keys.get(SYSTEM, [])], [], [])
    lines += ["}", f"system_account: {SYSTEM_ACCOUNT}", ""]
    return "\n".join(lines)


def _exports(everyone) -> dict[str, list[dict]]:
    """Per exporting account, one entry per subject that some identity imports from it,
    naming exactly the importing accounts."""
    _check_answers(everyone)
    importers: dict[tuple[str, str, str, bool], list[str]] = defaultdict(list)
    for identity in everyone:
        for imported in identity.imports:
            importers[(imported.source, imported.kind, imported.subject,
                       imported.streamed)].append(identity.account)
    exports: dict[str, list[dict]] = defaultdict(list)
    for (source, kind, subject, streamed), accounts in importers.items():
        entry: dict = {kind: subject}
        if streamed:
            entry |= {"response_type": "stream",
                      "response_threshold": STREAMED_RESPONSE_THRESHOLD}
        entry["accounts"] = sorted(set(accounts))
        exports[source].append(entry)
    return exports


def _check_answers(everyone) -> None:
    """An import from an identity's account must be something that identity answers, to
    the importer."""
    by_account = {identity.account: identity for identity in everyone}
    for importer in everyone:
        for imported in importer.imports:
            exporter = by_account.get(imported.source)
            if exporter is not None and (imported.subject not in exporter.answers
                                         or importer.name not in exporter.answers_to):
                raise ConfigurationError(f"{importer.name} imports {imported.subject} from "
                                         f"{exporter.name}, which does not answer it to them")


def _import_entry(imported: Import) -> dict:
    source = {"account": imported.source, "subject": imported.subject}
    if imported.kind == "stream":
        return {"stream": source}
    entry: dict = {"service": source}
    if imported.local != imported.subject:
        entry["to"] = imported.local
    return entry


def _account(name: str, settings: list[str], users: list[tuple[str, dict]],
             exports: list[dict], imports: list[dict]) -> list[str]:
    lines = [f"  {name} {{", *(f"    {line}" for line in settings), "    users: ["]
    for comment, user in users:
        lines += [f"      # {comment}", f"      {json.dumps(user)}"]
    lines.append("    ]")
    for title, entries in (("exports", exports), ("imports", imports)):
        if entries:
            lines.append(f"    {title}: [")
            lines += [f"      {json.dumps(entry)}" for entry in entries]
            lines.append("    ]")
    lines.append("  }")
    return lines


