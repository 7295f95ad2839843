"""Typed settings from the environment (`TERRA_` prefix).

Each service subclasses `RuntimeSettings` with its own fields. Placeholder secrets are
fine on a laptop (`TERRA_PROFILE=local`, the default) and refused anywhere else.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from terra.credentials import S3Credentials
from terra.errors import ConfigurationError

LOCAL_S3_ACCESS_KEY = "terra-local"
LOCAL_S3_SECRET_KEY = "terra-local-secret"


def is_loopback(host: str) -> bool:
    """Every address `host` names is a loopback one (0.0.0.0 and :: are every interface)."""
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(info[4][0].split("%")[0])
                         for info in socket.getaddrinfo(host, None)]
        except (OSError, ValueError):
            return False
    return bool(addresses) and all(
        address.is_loopback or (isinstance(address, ipaddress.IPv6Address)
                                and address.ipv4_mapped is not None
                                and address.ipv4_mapped.is_loopback)
        for address in addresses)


def listed(value: object) -> object:
    """A list setting from the environment, as a JSON list or comma-separated (a
    `mode="before"` validator of a `NoDecode` field)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Profile(StrEnum):
    LOCAL = "local"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class TraceExporter(StrEnum):
    NONE = "none"
    OTLP = "otlp"
    CONSOLE = "console"


class RuntimeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TERRA_", extra="ignore", frozen=True)
    # Whether the process uses object storage at all (auth_service and prompt_service do
    # not: they are given no S3 key, and are not refused for lacking one).
    uses_storage: ClassVar[bool] = True

    profile: Profile = Field(
        default=Profile.LOCAL, description="local or production: production refuses "
        "placeholder secrets, weak argon2 costs, a missing NATS credential or NATS CA. "
        "auth_service accepts the published local signing key only when local is set "
        "explicitly, and the gateway with local listens on loopback only.")
    data_dir: Path = Field(
        default=Path(".terra"), description="Where `terra up` keeps the embedded servers' "
        "data, their logs, the NATS and S3 keys and stack.json.")

    nats_url: str = Field(default="nats://127.0.0.1:4222",
                          description="NATS servers, comma-separated (tls://… with TLS).")
    nats_replicas: int = Field(
        default=1, ge=1, le=5, description="Replicas of every stream and KV bucket `terra "
        "provision` creates (3 on a 3-node cluster); a value other than the existing "
        "streams' is reported as a difference.")
    nats_connect_timeout_s: float = Field(default=5.0, description="NATS connect timeout.")
    nats_nkey_file: Path | None = Field(
        default=None, description="This process's NATS credential: an NKEY seed file "
        "(`terra nats-credentials`). Required outside the local profile.")
    nats_credentials_dir: Path | None = Field(
        default=None, description="A directory of NKEY seeds, `<identity>.nk` each (what "
        "`terra up` and the tests hand their processes); each process takes its own.")
    nats_ca_file: Path | None = Field(
        default=None, description="CA bundle that signed the NATS servers' certificates "
        "(TLS on); unset: plain TCP, or the system's CAs for tls:// URLs.")
    nats_tls_hostname: str | None = Field(
        default=None, description="The name in the servers' certificates, when the URLs "
        "use another (an IP address, a proxy).")

    s3_endpoint: str = Field(default="127.0.0.1:8333", description="host:port, no scheme.")
    s3_secure: bool = Field(default=False, description="Use HTTPS for S3.")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_connect_timeout_s: float = Field(default=2.0, description="S3 connect timeout.")
    s3_public_endpoint: str | None = Field(
        default=None, description="host:port clients reach for presigned downloads, when "
        "it differs from TERRA_S3_ENDPOINT (e.g. behind a proxy).")
    s3_public_secure: bool = Field(
        default=True, description="HTTPS for the public endpoint's presigned URLs.")
    # This process's S3 key: each service's own in production (deploy/minio/); the root
    # key is the operator's, for `terra provision` and `terra up` only.
    s3_access_key: SecretStr = Field(
        default=SecretStr(LOCAL_S3_ACCESS_KEY), description="This process's S3 access key: "
        "a service's own (limited to its prefixes), or the operator's root key for `terra "
        "up` and `terra provision`. The local placeholder is refused in production.")
    s3_secret_key: SecretStr = Field(
        default=SecretStr(LOCAL_S3_SECRET_KEY), description="Its secret; the local "
        "placeholder is refused in production.")
    s3_credentials_dir: Path | None = Field(
        default=None, description="A directory of S3 keys, `<identity>.json` each (what "
        "`terra up` and the tests hand their processes); each service takes its own.")

    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: LogFormat = Field(
        default=LogFormat.JSON, description="json: one object per line, with correlation "
        "and trace ids; text for people (what `terra up` sets).")
    trace_exporter: TraceExporter = Field(
        default=TraceExporter.NONE, description="OpenTelemetry traces. With none no "
        "tracing is installed at all (no spans, no instrumentation), so it costs nothing; "
        "metrics are exported with otlp only.")
    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP collector, e.g. http://collector:4318.")

    shutdown_grace_s: float = Field(
        default=30.0, description="Time to finish in-flight work on SIGTERM; what is left "
        "goes back to its queue.")
    # At most a minute: a pull's answers reach the service through an import that keeps
    # them flowing for two (`contracts.permissions.STREAMED_RESPONSE_THRESHOLD`).
    fetch_timeout_s: float = Field(default=1.0, gt=0, le=60, description="How long one pull "
                                   "request of a worker waits for commands.")
    liveness_interval_s: float = Field(default=2.0, gt=0, description="How often a worker "
                                       "rewrites its heartbeat (the records expire after 6 s).")
    erasure_second_pass_s: float = Field(
        default=60.0, gt=0, description="A deleted account's data is erased at once and "
        "again this much later: what a job in flight wrote in between goes too.")

    @property
    def tracing(self) -> bool:
        """Tracing costs every request a few spans: only pay for it when spans go somewhere."""
        return self.trace_exporter is not TraceExporter.NONE

    def nats_seed_file(self, identity: str) -> Path | None:
        """The NKEY seed this process signs in with, as `identity`."""
        if self.nats_nkey_file is not None:
            return self.nats_nkey_file
        if self.nats_credentials_dir is not None:
            return self.nats_credentials_dir / f"{identity}.nk"
        return None

    def s3_key(self, identity: str | None) -> tuple[str, str]:
        """(access key, secret key) this process signs S3 requests with, as `identity`:
        its own from `s3_credentials_dir` when set, else TERRA_S3_ACCESS_KEY/SECRET_KEY
        (one key per container in production; the operator's, with no identity)."""
        if self.s3_credentials_dir is not None and identity is not None:
            key = S3Credentials(self.s3_credentials_dir).key(identity)
            return key.access_key, key.secret_key
        if self.profile is not Profile.LOCAL and (found := self._s3_placeholders()):
            raise ConfigurationError(f"TERRA_PROFILE={self.profile.value} refuses the "
                                     f"placeholder S3 key; set {', '.join(found)}")
        return self.s3_access_key.get_secret_value(), self.s3_secret_key.get_secret_value()

    @property
    def nats_servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    def placeholder_secrets(self) -> dict[str, str]:
        """Setting name -> why it is refused outside the local profile. Extend per service."""
        # With a credentials directory each service's key comes from there; what still
        # reads these (the operator's `terra provision`) is refused them in `s3_key`.
        if not self.uses_storage or self.s3_credentials_dir is not None:
            return {}
        return self._s3_placeholders()

    def _s3_placeholders(self) -> dict[str, str]:
        found = {}
        if self.s3_access_key.get_secret_value() == LOCAL_S3_ACCESS_KEY:
            found["TERRA_S3_ACCESS_KEY"] = "the local placeholder access key"
        if self.s3_secret_key.get_secret_value() == LOCAL_S3_SECRET_KEY:
            found["TERRA_S3_SECRET_KEY"] = "the local placeholder secret key"
        return found

    @model_validator(mode="after")
    def _refuse_placeholders_outside_local(self) -> RuntimeSettings:
        if self.profile is Profile.LOCAL:
            return self
        found = self.placeholder_secrets()
        if self.nats_nkey_file is None and self.nats_credentials_dir is None:
            found["TERRA_NATS_NKEY_FILE"] = "no NATS credential (anyone could use the broker)"
        if self.nats_ca_file is None:
            found["TERRA_NATS_CA_FILE"] = ("no CA for the NATS servers' certificates (the "
                                           "credential would go to whoever answers)")
        if found:
            lines = "\n".join(f"  {name}: {why}" for name, why in found.items())
            raise ConfigurationError(
                f"TERRA_PROFILE={self.profile.value} refuses insecure defaults; set:\n{lines}"
            )
        return self
