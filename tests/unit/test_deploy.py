"""deploy/ keeps each key in its room: read as files (no Docker engine runs here), the
compose file gives each service its own NATS and S3 key and the operator's to provisioning
alone, production settings everywhere, and the NATS nodes keep their monitoring port on
loopback."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]

# Each Terra container and the identity whose keys it must hold (compose service prefix).
IDENTITY_OF = {"auth": "auth", "prompt": "prompt", "trainer": "trainer",
               "generator": "generator", "notifier": "notifier", "gateway": "gateway"}
STORAGE_USERS = {"trainer": "trainer_service", "generator": "generator_service",
                 "gateway": "gateway"}


def terra_services() -> dict[str, str]:
    """Container name -> the kind of Terra service it runs (auth-1 -> auth, ...)."""
    found = {}
    for name in SERVICES:
        kind = name.rsplit("-", 1)[0]
        if kind in IDENTITY_OF:
            found[name] = kind
    return found


def secret_sources(service: dict) -> list[str]:
    return [s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])]


def environment(service: dict) -> dict:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else {}


def test_every_terra_container_signs_in_as_itself_and_never_as_the_operator():
    containers = terra_services()
    assert set(containers.values()) == set(IDENTITY_OF)
    for name, kind in containers.items():
        nkeys = [s for s in secret_sources(SERVICES[name]) if s.startswith("nats_")
                 and s.endswith("_nkey")]
        assert nkeys == [f"nats_{kind}_nkey"], (name, nkeys)
    holders = [name for name, service in SERVICES.items()
               if "nats_operator_nkey" in secret_sources(service)]
    assert holders == ["provision"]


def test_each_storage_user_holds_its_own_s3_key_and_no_service_the_root_user():
    for name, kind in terra_services().items():
        keys = [s for s in secret_sources(SERVICES[name]) if s.startswith("s3_")]
        own = STORAGE_USERS.get(kind)
        assert keys == ([f"s3_{kind}_key"] if own else []), (name, keys)
        env = environment(SERVICES[name])
        assert "TERRA_S3_ACCESS_KEY" not in env and "MINIO_ROOT_USER" not in env, name
    root_holders = sorted(name for name, service in SERVICES.items()
                          if {"TERRA_S3_ACCESS_KEY", "MINIO_ROOT_USER"} & set(environment(service)))
    assert root_holders == ["minio", "provision", "storage-users"]


def test_production_settings_reach_every_terra_container():
    for name in terra_services():
        env = environment(SERVICES[name])
        assert env.get("TERRA_PROFILE") == "production", name
        assert env.get("TERRA_NATS_CA_FILE"), name
        assert env.get("TERRA_NATS_URL", "").startswith("tls://"), name


def test_nats_publishes_its_client_port_on_loopback_only_and_never_monitoring():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            published = str(port)
            assert not published.endswith(":8222"), name
            if published.endswith(":4222"):
                assert published.startswith("127.0.0.1:"), name


def test_the_monitoring_port_listens_on_loopback():
    config = (DEPLOY / "nats" / "nats-cluster.conf").read_text()
    lines = [line.split("#")[0].strip() for line in config.splitlines()]
    monitoring = [line for line in lines if re.match(r"^(http|http_port|https)\s*[:=]", line)]
    assert monitoring == ["http: 127.0.0.1:8222"]
    assert "include ./accounts.conf" in lines



def test_the_cpu_image_builds_the_console_and_points_the_gateway_at_it():
    """The installed package has no web/ beside it: the image builds the console from the
    gateway's own OpenAPI document (tsc checks the types) and names where it lies."""
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert "python -m gateway.console openapi /src/openapi.json" in dockerfile
    assert "npm ci" in dockerfile and "npx tsc --noEmit" in dockerfile
    assert "COPY --from=console /web/dist /opt/terra-console" in dockerfile
    assert "TERRA_CONSOLE_DIST=/opt/terra-console" in dockerfile
    ignored = (DEPLOY.parent / ".dockerignore").read_text().split()
    assert {"web/node_modules", "web/dist", ".venv"} <= set(ignored)
