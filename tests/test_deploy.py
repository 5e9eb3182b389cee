"""Deployment files, tested without a Docker engine: the real Compose client's validation, the Compose Specification
schema, policies over the parsed YAML, the env templates, the production secret guard, and `--compose` with no
engine."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from studioops.config import Settings
from studioops.envfile import SECRET_VARIABLES, guard_production, init_env, weak_secrets
from studioops.errors import ConfigError

ROOT = Path(__file__).parent.parent
DEV = ROOT / "infra" / "docker-compose.yaml"
PROD = ROOT / "infra" / "docker-compose.prod.yaml"
DEV_ENV = ROOT / "infra" / "env" / "development.env"
PROD_ENV = ROOT / "infra" / "env" / "production.env.example"
LONG_RUNNING_EXCEPT = {"storage-init", "migrate"}  # one-shot jobs


def compose_binary() -> Path:
    import compose

    return Path(compose.__file__).parent / "docker-compose"


def template(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", path.read_text(), flags=re.M))


def compose_variables(path: Path) -> set[str]:
    return set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", path.read_text()))


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def run_compose(path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in template(PROD_ENV) | template(DEV_ENV)}
    return subprocess.run([str(compose_binary()), "-f", str(path), *(args or ("config", "-q"))], capture_output=True,
                          text=True, env={**clean, **env}, cwd=path.parent)


def resolve(path: Path, env: dict[str, str] | None = None) -> dict:
    """The file as Compose itself reads it: anchors merged, variables interpolated, every profile on."""
    env = (template(PROD_ENV) if path == PROD else {}) if env is None else env
    result = run_compose(path, env, "--profile", "web", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@functools.cache
def services(path: Path) -> dict[str, dict]:
    return resolve(path)["services"]


def test_development_compose_passes_the_compose_client():
    result = run_compose(DEV, {})
    assert result.returncode == 0, result.stderr


def test_production_compose_passes_with_its_env_and_fails_without():
    ok = run_compose(PROD, template(PROD_ENV))
    assert ok.returncode == 0, ok.stderr
    missing = run_compose(PROD, {})
    assert missing.returncode != 0 and "required variable" in missing.stderr


@pytest.mark.parametrize("path", [DEV, PROD], ids=["dev", "prod"])
def test_compose_files_match_the_compose_specification_schema(path):
    schema = json.loads((Path(__file__).parent / "data" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(load(path))


@pytest.mark.parametrize("path", [DEV, PROD], ids=["dev", "prod"])
def test_every_long_running_service_has_a_healthcheck_and_waits_on_conditions(path):
    services = load(path)["services"]
    for name, service in services.items():
        if name not in LONG_RUNNING_EXCEPT:
            assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"
        for dep, rule in (service.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if dep in LONG_RUNNING_EXCEPT else "service_healthy"
            assert rule["condition"] == wanted, f"{name} -> {dep}"


def test_development_publishes_only_on_loopback():
    for name, service in load(DEV)["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_production_publishes_no_database_or_storage_port():
    services = load(PROD)["services"]
    for name in ("postgres", "s3", "langfuse-db", "clickhouse", "redis"):
        assert "ports" not in services[name], name
        assert services[name]["networks"] == ["backend"]
    assert load(PROD)["networks"]["backend"]["internal"] is True


SECRET_KEY = re.compile(r"PASSWORD|SECRET|SALT|ENCRYPTION_KEY|REDIS_AUTH")


def test_production_holds_no_literal_secret():
    for name, service in load(PROD)["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if SECRET_KEY.search(key) or ("://" in str(value) and "@" in str(value)):
                assert re.search(r"\$\{[A-Z_]+:\?", str(value)), f"{name}.{key} is not a required variable"
    # SeaweedFS takes its admin identity from the environment.
    assert load(PROD)["services"]["s3"]["environment"]["AWS_SECRET_ACCESS_KEY"].startswith("${MINIO_SECRET_KEY:?")


def test_production_hardening():
    for name, service in load(PROD)["services"].items():
        assert service["restart"] in {"unless-stopped", "always"} or name in LONG_RUNNING_EXCEPT, name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["cap_drop"] == ["ALL"], name
        assert set(service.get("cap_add", [])) <= {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"}, name
        assert service["deploy"]["resources"]["limits"]["memory"], name
        if name not in {"clickhouse", "langfuse-web", "langfuse-worker"}:  # their images write to their own tree
            assert service["read_only"] is True, name
    for name in ("api", "storage-init", "migrate", "clickhouse"):
        assert load(PROD)["services"][name]["user"] not in {"0", "root", "0:0"}


def test_postgres_volume_at_var_lib_postgresql_for_pg18():
    for path in (DEV, PROD):
        pg = load(path)["services"]["postgres"]
        assert pg["image"].startswith("pgvector/pgvector:") and "pg18" in pg["image"]
        assert "postgres_data:/var/lib/postgresql" in pg["volumes"]


def test_langfuse_has_everything_it_needs():
    services = load(DEV)["services"]
    assert {"langfuse-web", "langfuse-worker", "langfuse-db", "clickhouse", "redis"} <= set(services)
    env = services["langfuse-web"]["environment"]
    assert "langfuse-db:5432/langfuse" in env["DATABASE_URL"]  # a database of its own, not the app's
    assert env["LANGFUSE_S3_EVENT_UPLOAD_ENDPOINT"] == "http://s3:9000"
    assert env["LANGFUSE_S3_EVENT_UPLOAD_BUCKET"] in template(DEV_ENV)["STORAGE_EXTRA_BUCKETS"].split(",")
    assert services["web"]["profiles"] == ["web"]
    assert services["api"]["build"]["dockerfile"] == "Dockerfile" and (ROOT / "Dockerfile").exists()


def app_variables() -> set[str]:
    return {name.upper() for name in Settings.model_fields} | {"STUDIOOPS_DEBUG"}


@pytest.mark.parametrize(("env_file", "compose_file"), [(DEV_ENV, DEV), (PROD_ENV, PROD)], ids=["dev", "prod"])
def test_every_variable_is_in_the_templates_and_every_template_variable_is_read(env_file, compose_file):
    names = set(template(env_file))
    read = app_variables() | compose_variables(DEV) | compose_variables(PROD)
    assert app_variables() <= names, app_variables() - names
    assert compose_variables(compose_file) <= names, compose_variables(compose_file) - names
    assert names <= read, names - read


def test_templates_load_as_settings():
    for path in (DEV_ENV, PROD_ENV):
        Settings(_env_file=path)


@pytest.mark.parametrize("variable", ["DATABASE_URL", *SECRET_VARIABLES])
def test_production_guard_refuses_each_default_secret(variable, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    init_env(tmp_path / ".env", production=True)
    strong = template(tmp_path / ".env")
    env = dict(strong)
    if variable == "DATABASE_URL":
        env[variable] = strong[variable].replace(strong["POSTGRES_PASSWORD"], "studioops123")
    else:
        env[variable] = template(PROD_ENV)[variable]  # the template's placeholder
    settings = Settings(_env_file=None, **{k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields})
    assert weak_secrets(Settings(_env_file=None, **{k.lower(): v for k, v in strong.items()
                                                    if k.lower() in Settings.model_fields}), strong) == []
    with pytest.raises(ConfigError) as info:
        guard_production(settings, env)
    assert variable in str(info.value)
    secret = env[variable]
    assert len(secret) < 16 or secret not in str(info.value).replace(variable, "")


def test_guard_names_short_and_placeholder_values():
    s = Settings(_env_file=None, studioops_env="production",
                 database_url="postgresql://u:short@db/x", minio_secret_key="x" * 40,
                 langfuse_public_key="pk-lf-your-public-key", langfuse_secret_key="sk-lf-your-secret-key")
    found = " ".join(weak_secrets(s, {}))
    assert "DATABASE_URL password (under 16 characters)" in found
    assert "LANGFUSE_PUBLIC_KEY (a placeholder)" in found and "LANGFUSE_SECRET_KEY (a placeholder)" in found
    assert "MINIO_SECRET_KEY" not in found


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in template(PROD_ENV)}
    return subprocess.run([sys.executable, "-m", "studioops", *args], capture_output=True, text=True,
                          env={**clean, **env}, cwd=cwd)


def test_production_commands_refuse_the_design_documents_defaults(tmp_path):
    env = {"STUDIOOPS_ENV": "production", "STUDIOOPS_HOME": str(tmp_path / "home")}
    for args in (("up",), ("db", "migrate"), ("api", "--port", "1")):
        result = cli(*args, env=env, cwd=tmp_path)
        assert result.returncode == 1, args
        line = result.stderr.strip()
        assert line.count("\n") == 0 and "DATABASE_URL password" in line and "MINIO_SECRET_KEY" in line, args
        assert "studioops123" not in line


def test_env_init_writes_strong_secrets_and_keeps_an_existing_file(tmp_path):
    first = cli("env", "init", "--production", env={}, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    written = template(tmp_path / ".env")
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    assert written["STUDIOOPS_ENV"] == "production"
    assert len(written["LANGFUSE_ENCRYPTION_KEY"]) == 64 and int(written["LANGFUSE_ENCRYPTION_KEY"], 16) >= 0
    assert written["POSTGRES_PASSWORD"] in written["DATABASE_URL"]
    settings = Settings(_env_file=tmp_path / ".env")
    assert weak_secrets(settings, written) == []
    again = cli("env", "init", env={}, cwd=tmp_path)
    assert again.returncode == 1 and "--force" in again.stderr
    assert template(tmp_path / ".env") == written
    forced = cli("env", "init", "--force", env={}, cwd=tmp_path)
    assert forced.returncode == 0 and template(tmp_path / ".env")["POSTGRES_PASSWORD"] != written["POSTGRES_PASSWORD"]


def test_compose_without_an_engine_is_one_clear_line(tmp_path):
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "docker-compose.yaml").write_text(DEV.read_text())
    # No Docker engine on these machines; a PATH without docker exercises the missing-client path too.
    for env in ({}, {"PATH": str(Path(sys.executable).parent)}):
        for args in (("up", "--compose"), ("down", "--compose"), ("logs", "--compose")):
            result = cli(*args, env=env, cwd=tmp_path)
            assert result.returncode == 1, (args, result.stderr)
            assert result.stderr.startswith("studioops: ") and result.stderr.count("\n") == 1, result.stderr
            assert "Docker" in result.stderr or "docker" in result.stderr


# Upstream requirements (issue #14). Each test names the upstream source; infra/README.md lists what was read.
BOTH = pytest.mark.parametrize("path", [DEV, PROD], ids=["dev", "prod"])


def version_of(image: str, pattern: str) -> tuple[int, ...]:
    match = re.fullmatch(pattern, image)
    assert match, f"{image} does not match {pattern}"
    return tuple(int(part) for part in match.group(1).split("."))


@BOTH
def test_clickhouse_is_new_enough_for_langfuse_v4(path):
    # Langfuse's self-hosting docs: "Langfuse v4 requires ClickHouse >= 25.12"; migration 0039 uses text indexes.
    image = services(path)["clickhouse"]["image"]
    assert version_of(image, r"clickhouse/clickhouse-server:(\d+\.\d+(?:\.\d+)*)") >= (25, 12), image


@BOTH
def test_langfuse_and_web_servers_listen_on_every_interface(path):
    # Docker sets HOSTNAME to the container id; langfuse-web and the web app (Next.js) and langfuse-worker
    # (worker/src/index.ts: app.listen(PORT, HOSTNAME)) bind to it, so a healthcheck on 127.0.0.1 is refused.
    for name in ("langfuse-web", "langfuse-worker", "web"):
        assert services(path)[name]["environment"].get("HOSTNAME") == "0.0.0.0", name


@BOTH
def test_no_read_only_service_mounts_an_inline_config_or_secret(path):
    # docker/compose pkg/compose/secrets.go (since v2.33.1): "cannot create config ... in read-only service ...:
    # `file` is the sole supported option". `config -q` accepts it; only `up` fails.
    compose = load(path)
    for name, service in compose["services"].items():
        if not service.get("read_only"):
            continue
        for kind in ("configs", "secrets"):
            for mount in service.get(kind) or []:
                source = mount if isinstance(mount, str) else mount["source"]
                definition = (compose.get(kind) or {})[source]
                assert set(definition) <= {"file", "name"}, f"{name} mounts {kind[:-1]} {source} from {set(definition)}"


# Images whose entrypoint starts as root and drops to its own user (su-exec / gosu): docker/entrypoint.sh in
# seaweedfs/seaweedfs, docker-entrypoint.sh in docker-library/postgres and redis.
DROPS_PRIVILEGES = ("chrislusf/seaweedfs:", "pgvector/pgvector:", "postgres:", "redis:")


def test_entrypoints_that_switch_user_can_do_so_without_capabilities():
    for name, service in services(PROD).items():
        if not service["image"].startswith(DROPS_PRIVILEGES) or "ALL" not in service.get("cap_drop", []):
            continue
        runs_as_its_user = service.get("user") not in {None, "", "0", "root", "0:0"}
        may_switch = {"SETUID", "SETGID"} <= set(service.get("cap_add", []))
        assert runs_as_its_user or may_switch, f"{name}: su-exec needs SETUID/SETGID or a user"


@BOTH
def test_langfuse_matches_its_official_compose_file(path):
    # Langfuse's docker-compose.yml (v4): the worker needs NEXTAUTH_URL (batch-export links); langfuse-web's media
    # endpoint is one the browser reaches; its database runs in UTC.
    svc = services(path)
    assert svc["langfuse-worker"]["environment"]["NEXTAUTH_URL"] == svc["langfuse-web"]["environment"]["NEXTAUTH_URL"]
    media = svc["langfuse-web"]["environment"]["LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT"]
    assert media.split("://")[1].split(":")[0].split("/")[0] not in svc, f"{media} only resolves inside Compose"
    db = svc["langfuse-db"]["environment"]
    assert db["TZ"] == "UTC" and db["PGTZ"] == "UTC"


@BOTH
def test_long_running_services_restart_and_redis_keeps_its_data(path):
    svc = services(path)
    for name, service in svc.items():
        if name not in LONG_RUNNING_EXCEPT:
            assert service.get("restart") in {"always", "unless-stopped"}, f"{name} has no restart policy"
    redis_volumes = svc["redis"].get("volumes", [])
    assert any(v["target"] == "/data" and v["type"] == "volume" for v in redis_volumes), "Redis keeps no volume"


@BOTH
def test_every_pg_isready_connects_over_tcp(path):
    # docker-library/postgres#880, #146: during first-start initialisation the temporary server listens on the Unix
    # socket only (docker-entrypoint.sh: listen_addresses=''), so pg_isready without -h passes too early.
    checks = {name: " ".join(service["healthcheck"]["test"]) for name, service in services(path).items()
              if "pg_isready" in " ".join(service.get("healthcheck", {}).get("test", []))}
    assert set(checks) == {"postgres", "langfuse-db"}
    for name, check in checks.items():
        assert re.search(r"pg_isready .*(-h ?|--host[ =])(127\.0\.0\.1|localhost)\b", check), f"{name}: {check}"


def retries_first_connection(service: dict) -> bool:
    """A bounded retry in the command (a shell loop, or a command's own --timeout wait), or a restart policy."""
    command = " ".join(service.get("command") or [])
    bounded_loop = re.search(r"for \w+ in \$\$?\(seq \d+\); do .* && break; sleep \d+; done", command)
    own_wait = command.startswith("studioops ") and "--timeout" in command
    restarts = str(service.get("restart")).startswith(("always", "unless-stopped", "on-failure"))
    return bool(bounded_loop or own_wait or restarts)


@BOTH
def test_every_service_waiting_on_health_retries_its_first_connection(path):
    # A healthcheck passing does not promise the first connection succeeds (PostgreSQL restarts once after
    # initialising a fresh volume): one-shot services retry for a bounded time, servers restart.
    waiting = [name for name, service in services(path).items()
               if any(rule["condition"] == "service_healthy" for rule in (service.get("depends_on") or {}).values())]
    assert {"migrate", "storage-init", "langfuse-web", "langfuse-worker"} <= set(waiting)
    for name in waiting:
        assert retries_first_connection(services(path)[name]), f"{name} does not retry its first connection"


@BOTH
def test_web_profile_builds_from_the_app_source(path, tmp_path):
    # Nothing else builds studioops/web: without a build section `--profile web up` fails on the pull.
    web = services(path)["web"]
    assert web["build"]["context"] == str(ROOT / "apps" / "web") and web["build"]["dockerfile"] == "Dockerfile"
    assert set(web["build"]["args"]) == {k for k in web["environment"] if k.startswith("NEXT_PUBLIC_")}
    env = {**(template(PROD_ENV) if path == PROD else {}), "WEB_CONTEXT": str(tmp_path)}
    assert resolve(path, env)["services"]["web"]["build"]["context"] == str(tmp_path)


# Projects whose full release number has two parts: PostgreSQL since 10 (18.6 is a patch release of 18) and
# SeaweedFS (releases 4.47, 4.48, ...). Every other image names MAJOR.MINOR.PATCH (ClickHouse adds a build number).
TWO_PART_RELEASES = ("postgres:", "chrislusf/seaweedfs:")


def pinned_to_a_patch_release(image: str) -> bool:
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    parts = 2 if image.startswith(TWO_PART_RELEASES) else 3
    return bool(re.match(rf"\d+(\.\d+){{{parts - 1},}}(?![\d.])", tag)) and "ankane/pgvector" not in image


def dockerfile_images() -> list[str]:
    return re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.M)


@BOTH
def test_every_image_is_built_or_pinned_to_a_patch_release(path):
    # A floating tag (`:4`, `:25.8`, `:latest`) changes under a running deployment. Whether a pin is the newest
    # patch is checked against upstream by hand (infra/README.md), not here.
    svc = services(path)
    built = {service["image"] for service in svc.values() if "build" in service}
    for name, service in svc.items():
        image = service["image"]
        assert image in built or pinned_to_a_patch_release(image), f"{name}: {image} is neither built nor pinned"
    for image in dockerfile_images():
        assert pinned_to_a_patch_release(image), f"Dockerfile: {image}"


@BOTH
def test_pgvector_has_the_hnsw_fixes(path):
    # pgvector CHANGELOG: 0.8.2 fixed a buffer overflow with parallel HNSW builds, 0.8.3 a possible HNSW index
    # corruption during vacuum. The app's indexes are HNSW.
    image = services(path)["postgres"]["image"]
    assert version_of(image, r"pgvector/pgvector:(\d+\.\d+\.\d+)-pg18(?:-\w+)?") >= (0, 8, 3), image


def test_production_langfuse_worker_has_egress_and_clickhouse_its_memory():
    compose = resolve(PROD)
    worker_networks = compose["services"]["langfuse-worker"]["networks"]
    assert any(not compose["networks"][name].get("internal") for name in worker_networks), worker_networks
    # Langfuse's "ClickHouse for self-hosted Langfuse": at least 2 CPUs and 8 GiB.
    limits = compose["services"]["clickhouse"]["deploy"]["resources"]["limits"]
    assert int(limits["memory"]) >= 8 * 2**30 and float(limits["cpus"]) >= 2
