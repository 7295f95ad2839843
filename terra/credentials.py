"""Secret files: each written so only its owner may read it, and the S3 keys a credentials
directory holds, one per service identity (`<identity>.json`: the access key and secret
that identity signs with). Files that exist are kept, so a restart reuses them. The
operator's root key is not there: it is the operator's own setting. NATS keys are
`terra.nats.accounts`'s (their public halves are rendered into the server's accounts).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from contracts.storage_access import STORAGE_IDENTITIES
from terra.errors import ConfigurationError


def write_secret(path: Path, text: str) -> None:
    """Write a secret only its owner may read (0600, a file that existed included)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text + "\n")
    path.chmod(0o600)  # O_CREAT's mode applies to a new file only


@dataclass(frozen=True)
class S3Key:
    access_key: str
    secret_key: str

    @classmethod
    def new(cls) -> S3Key:
        # 20 and 40 characters: the longest that every MinIO release accepts.
        return cls(secrets.token_hex(10).upper(), secrets.token_hex(20))

    def __repr__(self) -> str:  # never print a secret by accident
        return f"S3Key(access_key={self.access_key!r})"


@dataclass(frozen=True)
class S3Credentials:
    """A directory of S3 keys, one per service identity."""

    directory: Path

    def key_file(self, identity: str) -> Path:
        return self.directory / f"{identity}.json"

    def key(self, identity: str) -> S3Key:
        path = self.key_file(identity)
        try:
            fields = json.loads(path.read_text())
            return S3Key(fields["access_key"], fields["secret_key"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"no S3 key for {identity} in {path} ({exc}); make one with "
                "`terra storage-credentials init --dir …`") from exc

    def keys(self) -> dict[str, S3Key]:
        return {identity: self.key(identity) for identity in STORAGE_IDENTITIES}

    @classmethod
    def ensure(cls, directory: Path) -> S3Credentials:
        """Make the keys that are missing; existing ones are kept (restarts reuse them)."""
        credentials = cls(directory)
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        for identity in STORAGE_IDENTITIES:
            if not credentials.key_file(identity).exists():
                key = S3Key.new()
                write_secret(credentials.key_file(identity), json.dumps(
                    {"access_key": key.access_key, "secret_key": key.secret_key}))
        return credentials
