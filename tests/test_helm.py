"""The Helm chart (infra/helm/studioops): rendered by Helm's own engine, checked against Kubernetes' schemas, the
CRDs of CloudNativePG, its Barman Cloud Plugin and the Prometheus Operator, Pod Security "restricted", the values
schema, and the app's own settings and commands.

No cluster is needed: helm-python-sdk binds Helm v4's Go SDK and renders offline.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from studioops.config import Settings

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (Helm's Go SDK for Python) is not installed")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")

ROOT = Path(__file__).parent.parent
CHART = ROOT / "infra" / "helm" / "studioops"
DATA = Path(__file__).parent / "data"
KUBERNETES = "1.37.0"  # the newest schemas kubernetes-validate bundles
RELEASE, NAMESPACE = "studioops", "studio"
PRODUCTION_URL = "postgresql://studioops:Xq7vR2mN9pL4sT8w@db.example.internal:5432/studioops"

VALUE_SETS: dict[str, dict] = {
    "defaults": {},
    "cnpg": {"postgresql": {"cloudnativepg": {"enabled": True}}},
    "cnpg-with-backups": {
        "postgresql": {"cloudnativepg": {"enabled": True, "clusterName": "pg", "backup": {"enabled": True}}},
        "storage": {"extraBuckets": "langfuse"},
    },
    "external-db": {
        # Everything from inline values: the chart makes the Secrets.
        "database": {"existingSecret": "", "url": PRODUCTION_URL},
        "storage": {"existingSecret": "", "accessKey": "studioops", "secretKey": "k3Jd9sLq2Vx8Rt5Wm1Zp",
                    "endpoint": "https://s3.eu-west-1.amazonaws.com", "secure": True, "region": "eu-west-1"},
        "langfuse": {"host": "https://langfuse.example.com", "publicKey": "pk-lf-7f3a9c1e2b4d",
                     "secretKey": "sk-lf-9e8d7c6b5a4f3e2d"},
    },
    "ingress": {
        "ingress": {"enabled": True, "className": "nginx",
                    "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                    "hosts": [{"host": "api.studio.example", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                    "tls": [{"secretName": "api-tls", "hosts": ["api.studio.example"]}]},
        "networkPolicy": {"ingressFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "langfuse": {"existingSecret": "langfuse-keys"},
    },
    "fixed-size": {
        "autoscaling": {"enabled": False},
        "api": {"replicas": 3, "topologySpread": {"enabled": False}},
        "podDisruptionBudget": {"minAvailable": 2},
        "serviceAccount": {"create": False},
        "networkPolicy": {"enabled": False},
        "backups": {"verify": {"enabled": False}},
        "image": {"digest": "sha256:" + "ab" * 32},
    },
}


# -- rendering ---------------------------------------------------------------------------------------------------
@cache
def chart():
    return helm.Chart.load(str(CHART))


@cache
def _render(name: str) -> tuple[dict, ...]:
    rendered = chart().render(copy.deepcopy(VALUE_SETS[name]), name=RELEASE, namespace=NAMESPACE,
                              is_install=True)
    docs = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue  # NOTES.txt
        docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return tuple(docs)


def render(name: str) -> list[dict]:
    return copy.deepcopy(list(_render(name)))


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    """(kind/name, pod spec) of every workload."""
    out = []
    for d in docs:
        spec = {"Deployment": lambda d: d["spec"]["template"]["spec"],
                "StatefulSet": lambda d: d["spec"]["template"]["spec"],
                "DaemonSet": lambda d: d["spec"]["template"]["spec"],
                "Job": lambda d: d["spec"]["template"]["spec"],
                "CronJob": lambda d: d["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                "Pod": lambda d: d["spec"]}.get(d["kind"])
        if spec:
            out.append((f"{d['kind']}/{d['metadata']['name']}", spec(d)))
    return out


def containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"] + pod.get("ephemeralContainers", [])


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# -- schemas ------------------------------------------------------------------------------------------------------
CRD_FILES = {
    ("postgresql.cnpg.io/v1", "Cluster"): "postgresql.cnpg.io_clusters.yaml",
    ("postgresql.cnpg.io/v1", "ScheduledBackup"): "postgresql.cnpg.io_scheduledbackups.yaml",
    ("barmancloud.cnpg.io/v1", "ObjectStore"): "barmancloud.cnpg.io_objectstores.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
}


@cache
def crd_schema(api_version: str, kind: str) -> dict:
    """The openAPIV3Schema of the served version, closed like the API server's structural pruning would be."""
    crd = yaml.safe_load((DATA / CRD_FILES[(api_version, kind)]).read_text())
    version = api_version.split("/")[1]
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
    return _closed(copy.deepcopy(schema))


def _closed(node):
    """Forbid unknown fields (the API server prunes them silently; we want to hear about them)."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for value in node.values():
            _closed(value)
    elif isinstance(node, list):
        for value in node:
            _closed(value)
    return node


def validate_manifest(doc: dict) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_FILES:
        jsonschema.validate(doc, crd_schema(*key))
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    else:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


# -- Pod Security Standards, "restricted" profile (kubernetes.io/docs/concepts/security/pod-security-standards) --
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(pod: dict) -> list[str]:
    """Every control of the baseline and restricted profiles that `pod` breaks, as readable lines."""
    bad: list[str] = []
    psc = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            bad.append(f"{field} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            bad.append(f"volume {volume['name']} has type {sorted(kinds)}")
    for sysctl in psc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            bad.append(f"sysctl {sysctl['name']} is not safe")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        bad.append("pod is a Windows HostProcess")
    for ctx, where in [(psc, "pod")] + [(c.get("securityContext") or {}, c["name"]) for c in containers(pod)]:
        selinux = ctx.get("seLinuxOptions") or {}
        if selinux.get("type") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            bad.append(f"{where}: seLinuxOptions {selinux}")
        if (ctx.get("seccompProfile") or {}).get("type") == "Unconfined":
            bad.append(f"{where}: seccomp Unconfined")
        if (ctx.get("appArmorProfile") or {}).get("type") == "Unconfined":
            bad.append(f"{where}: AppArmor Unconfined")
        if ctx.get("runAsUser") == 0:
            bad.append(f"{where}: runAsUser 0")
    for c in containers(pod):
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            bad.append(f"{name}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            bad.append(f"{name}: Windows HostProcess")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{name}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{name}: procMount {sc['procMount']}")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: allowPrivilegeEscalation is not false")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            bad.append(f"{name}: runAsNonRoot is not true")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{name}: seccomp profile is {seccomp}, not RuntimeDefault or Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{name}: adds capabilities {caps['add']}")
    return bad


def project_violations(pod: dict) -> list[str]:
    """What this project asks beyond the profile: uid 10001, read-only root with /tmp on an emptyDir, no token."""
    bad = []
    if pod.get("automountServiceAccountToken") is not False:
        bad.append("automountServiceAccountToken is not false")
    tmp = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for c in containers(pod):
        sc = c.get("securityContext") or {}
        if sc.get("runAsUser", (pod.get("securityContext") or {}).get("runAsUser")) != 10001:
            bad.append(f"{c['name']}: not uid 10001")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{c['name']}: root file system is writable")
        if not any(m["mountPath"] == "/tmp" and m["name"] in tmp for m in c.get("volumeMounts", [])):
            bad.append(f"{c['name']}: no emptyDir at /tmp")
    return bad


# -- tests: rendering and validation ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_manifest_is_valid_kubernetes(name):
    docs = render(name)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Job"} <= kinds
    for doc in docs:
        try:
            validate_manifest(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} is invalid: {exc}")
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert "namespace" not in doc["metadata"]  # Helm's --namespace decides


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_finds_nothing(name):
    report = helm.lint(str(CHART), copy.deepcopy(VALUE_SETS[name]), strict=True, namespace=NAMESPACE,
                       kube_version="v" + KUBERNETES)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


def test_the_validators_catch_a_wrong_field():
    """Guard against validators that accept anything."""
    deployment = one(render("defaults"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(deployment)
    cluster = one(render("cnpg"), "Cluster")
    cluster["spec"]["bootstrap"]["initdb"]["postInitApplicationSql"] = []
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(cluster)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_pod_meets_pod_security_restricted(name):
    pods = pod_specs(render(name))
    expected = 5 if name == "fixed-size" else 6  # the API, 2 hook Jobs, 2 or 3 backup CronJobs
    assert len(pods) == expected, [p for p, _ in pods]
    for where, pod in pods:
        assert not restricted_violations(pod), (where, restricted_violations(pod))
        assert not project_violations(pod), (where, project_violations(pod))


def test_the_pod_security_check_catches_each_weakness():
    _, pod = pod_specs(render("defaults"))[0]
    assert not restricted_violations(pod) and not project_violations(pod)

    def broken(change) -> dict:
        p = copy.deepcopy(pod)
        change(p, p["containers"][0]["securityContext"])
        return p

    cases = [
        lambda p, c: c.pop("allowPrivilegeEscalation"),
        lambda p, c: c.update(capabilities={"drop": ["NET_RAW"]}),
        lambda p, c: c.update(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
        lambda p, c: (c.pop("seccompProfile"), p["securityContext"].pop("seccompProfile")),
        lambda p, c: (c.pop("runAsNonRoot"), p["securityContext"].pop("runAsNonRoot")),
        lambda p, c: c.update(runAsUser=0),
        lambda p, c: c.update(privileged=True),
        lambda p, c: p.update(hostNetwork=True),
        lambda p, c: p["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
    ]
    for i, case in enumerate(cases):
        assert restricted_violations(broken(case)), f"case {i} went unnoticed"
    for case in [lambda p, c: c.update(readOnlyRootFilesystem=False),
                 lambda p, c: p.update(automountServiceAccountToken=True),
                 lambda p, c: p["containers"][0].pop("volumeMounts")]:
        assert project_violations(broken(case))


# -- tests: what the chart runs ---------------------------------------------------------------------------------
def test_api_deployment_serves_uvicorn_with_probes_and_metrics():
    docs = render("defaults")
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]
    api = pod["spec"]["containers"][0]
    assert api["command"] == ["uvicorn"] and api["args"][0] == "studioops.api.main:app"
    assert Path(ROOT / "src/studioops/api/main.py").read_text().count("app = create_app()") == 1
    port = api["ports"][0]
    assert port["containerPort"] == 8000 and port["name"] == "http"
    assert api["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert api["startupProbe"]["httpGet"]["path"] == "/livez"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert {c["topologyKey"] for c in pod["spec"]["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert api["resources"]["requests"] and api["resources"]["limits"]["memory"]
    service = one(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_pods_match_the_image():
    """The chart's uid and writable paths are the Dockerfile's: uid 10001, STUDIOOPS_HOME under /tmp."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M)
    _, pod = pod_specs(render("defaults"))[0]
    assert pod["securityContext"]["runAsUser"] == 10001
    env = env_of(pod["containers"][0])
    assert env["STUDIOOPS_HOME"]["value"].startswith("/tmp/")
    assert re.search(r"STUDIOOPS_HOME=/tmp/", dockerfile)


def test_fixed_size_values_set_replicas_and_pdb():
    docs = render("fixed-size")
    assert one(docs, "Deployment")["spec"]["replicas"] == 3
    assert not of_kind(docs, "HorizontalPodAutoscaler") and not of_kind(docs, "NetworkPolicy")
    assert not of_kind(docs, "ServiceAccount")
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"].startswith("studioops@sha256:")
    assert {c["metadata"]["name"] for c in of_kind(docs, "CronJob")} == {"studioops-backup", "studioops-backup-weekly"}


def test_ingress_routes_to_the_service():
    docs = render("ingress")
    ingress = one(docs, "Ingress")
    service = one(docs, "Service")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] == service["spec"]["ports"][0]["name"]
    assert ingress["spec"]["tls"][0]["secretName"] == "api-tls"
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "http" and monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["from"] == VALUE_SETS["ingress"]["networkPolicy"]["ingressFrom"]


def command_exists(args: list[str]) -> bool:
    from typer.testing import CliRunner

    from studioops.cli import app

    result = CliRunner().invoke(app, [*args, "--help"])
    return result.exit_code == 0


def test_hooks_and_cronjobs_run_the_studioops_commands():
    docs = render("defaults")
    jobs = {j["metadata"]["name"]: j for j in of_kind(docs, "Job")}
    migrate, init = jobs["studioops-migrate"], jobs["studioops-storage-init"]
    assert migrate["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert init["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    # Buckets before migrations; the ServiceAccount before both.
    assert int(init["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        migrate["metadata"]["annotations"]["helm.sh/hook-weight"])
    account = one(docs, "ServiceAccount")
    assert int(account["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        init["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert account["automountServiceAccountToken"] is False

    def args(pod_spec):
        c = pod_spec["containers"][0]
        return c["command"] + c["args"]

    assert args(migrate["spec"]["template"]["spec"]) == ["studioops", "db", "migrate"]
    assert args(init["spec"]["template"]["spec"])[:3] == ["studioops", "storage", "init"]
    crons = {c["metadata"]["name"]: c for c in of_kind(docs, "CronJob")}
    commands = {name: args(c["spec"]["jobTemplate"]["spec"]["template"]["spec"]) for name, c in crons.items()}
    assert commands == {
        "studioops-backup": ["studioops", "backup", "create"],
        "studioops-backup-weekly": ["studioops", "backup", "create", "--weekly"],
        "studioops-backup-verify": ["studioops", "backup", "verify", "latest"],
    }
    for cron in crons.values():
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert env_of(pod["containers"][0])["BACKUP_UPLOAD"]["value"] == "true"  # the bucket keeps the archives
        scratch = next(v for v in pod["volumes"] if v["name"] == "tmp")
        assert scratch["emptyDir"]["sizeLimit"] == "20Gi"
    for command in [*commands.values(), args(migrate["spec"]["template"]["spec"]),
                    args(init["spec"]["template"]["spec"])]:
        assert command_exists(command[1:]), command


def test_a_missing_command_is_noticed():
    assert not command_exists(["backup", "teleport"])


SECRET_SETTINGS = {"DATABASE_URL", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "LANGFUSE_PUBLIC_KEY",
                   "LANGFUSE_SECRET_KEY"}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_container_gets_real_settings_and_secrets_only_from_secrets(name):
    docs = render(name)
    settings = {field.upper() for field in Settings.model_fields}
    made = {s["metadata"]["name"]: s for s in of_kind(docs, "Secret")}
    expected_external = {
        "defaults": {"studioops-database", "studioops-s3"},
        "cnpg": {"studioops-pg-app", "studioops-s3"},
        "cnpg-with-backups": {"pg-app", "studioops-s3"},
        "external-db": set(),
        "ingress": {"studioops-database", "studioops-s3", "langfuse-keys"},
        "fixed-size": {"studioops-database", "studioops-s3"},
    }[name]
    for where, pod in pod_specs(docs):
        for c in containers(pod):
            env = env_of(c)
            assert env["STUDIOOPS_ENV"]["value"] == "production", where
            assert set(env) - {"HOME"} <= settings, (where, set(env) - settings)
            assert {"MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"} <= set(env)
            # `storage init` needs no database; it runs before a CNPG Cluster of the same release exists.
            assert ("DATABASE_URL" in env) == (not where.endswith("-storage-init")), where
            referenced = set()
            for var in SECRET_SETTINGS & set(env):
                assert "value" not in env[var], f"{where}: {var} is written into the manifest"
                ref = env[var]["valueFrom"]["secretKeyRef"]
                referenced.add(ref["name"])
                if ref["name"] in made:
                    assert ref["key"] in made[ref["name"]]["stringData"], (where, var)
            if "DATABASE_URL" in env:
                assert referenced - set(made) == expected_external, where
            assert c.get("envFrom") is None


def test_inline_values_become_hook_secrets_that_exist_before_the_jobs():
    docs = render("external-db")
    secrets = {s["metadata"]["name"]: s for s in of_kind(docs, "Secret")}
    assert set(secrets) == {"studioops-database", "studioops-s3", "studioops-langfuse"}
    assert secrets["studioops-database"]["stringData"]["DATABASE_URL"] == PRODUCTION_URL
    jobs_weight = min(int(j["metadata"]["annotations"]["helm.sh/hook-weight"]) for j in of_kind(docs, "Job"))
    for secret in secrets.values():
        assert "pre-install" in secret["metadata"]["annotations"]["helm.sh/hook"]
        assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < jobs_weight
    env = env_of(one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert env["MINIO_ENDPOINT"]["value"] == "https://s3.eu-west-1.amazonaws.com"
    assert env["LANGFUSE_HOST"]["value"] == "https://langfuse.example.com"
    # The egress rule follows the endpoints' ports (443 for both https URLs).
    ports = {p["port"] for rule in one(docs, "NetworkPolicy")["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, 5432, 443}


def test_defaults_point_at_the_seaweedfs_and_langfuse_charts():
    docs = render("defaults")
    env = env_of(one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    # The SeaweedFS chart's S3 Service is <release>-s3 on 8333; the Langfuse chart's web Service <release>-web:3000.
    assert env["MINIO_ENDPOINT"]["value"] == "seaweedfs-s3:8333"
    assert env["LANGFUSE_HOST"]["value"] == "http://langfuse-web:3000"
    assert "LANGFUSE_PUBLIC_KEY" not in env  # tracing stays off without keys
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "studioops", "app.kubernetes.io/instance": RELEASE}
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, 5432, 8333, 3000}
    assert policy["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]


# -- tests: CloudNativePG -----------------------------------------------------------------------------------------
def test_cnpg_cluster_has_pgvector_and_feeds_database_url():
    docs = render("cnpg")
    cluster = one(docs, "Cluster")
    spec = cluster["spec"]
    assert spec["instances"] == 3
    assert re.fullmatch(r"ghcr\.io/cloudnative-pg/postgresql:18\.\d+-standard-\w+", spec["imageName"])
    initdb = spec["bootstrap"]["initdb"]
    assert initdb["database"] == "studioops" and initdb["owner"] == "studioops"
    assert "CREATE EXTENSION IF NOT EXISTS vector" in initdb["postInitApplicationSQL"]
    assert "CREATE EXTENSION IF NOT EXISTS vector" in initdb["postInitTemplateSQL"]
    assert 'ALTER ROLE "studioops" CREATEDB' in initdb["postInitApplicationSQL"]
    assert "plugins" not in spec and not of_kind(docs, "ObjectStore")
    for where, pod in pod_specs(docs):
        env = env_of(pod["containers"][0])
        if where.endswith("-storage-init"):  # a pre-install hook: the -app Secret does not exist yet
            assert "DATABASE_URL" not in env
            continue
        ref = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"{cluster['metadata']['name']}-app", "key": "uri"}, where
    # The Cluster does not exist before the install: the first migration runs after it.
    migrate = next(j for j in of_kind(docs, "Job") if j["metadata"]["name"].endswith("-migrate"))
    assert migrate["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


def test_cnpg_backups_go_through_the_barman_cloud_plugin():
    docs = render("cnpg-with-backups")
    cluster, store, scheduled = one(docs, "Cluster"), one(docs, "ObjectStore"), one(docs, "ScheduledBackup")
    assert cluster["metadata"]["name"] == "pg"
    plugin = cluster["spec"]["plugins"][0]
    assert plugin["name"] == "barman-cloud.cloudnative-pg.io" and plugin["isWALArchiver"] is True
    assert plugin["parameters"]["barmanObjectName"] == store["metadata"]["name"]
    assert scheduled["spec"]["cluster"]["name"] == "pg"
    assert scheduled["spec"]["method"] == "plugin"
    assert scheduled["spec"]["pluginConfiguration"]["name"] == plugin["name"]
    config = store["spec"]["configuration"]
    assert config["destinationPath"] == "s3://cnpg-backups/"
    assert config["endpointURL"] == "http://seaweedfs-s3:8333"
    assert config["s3Credentials"]["accessKeyId"] == {"name": "studioops-s3", "key": "MINIO_ACCESS_KEY"}
    # `storage init` creates the bucket before the Cluster archives its first WAL.
    init = next(j for j in of_kind(docs, "Job") if j["metadata"]["name"].endswith("-storage-init"))
    buckets = env_of(init["spec"]["template"]["spec"]["containers"][0])["STORAGE_EXTRA_BUCKETS"]["value"]
    assert buckets.split(",") == ["langfuse", "cnpg-backups"]


# -- tests: the values schema ---------------------------------------------------------------------------------
def client_install(values: dict) -> dict:
    """`helm install --dry-run=client`: Helm's own install path (schema included), no cluster contacted."""
    config = helm.Config(namespace=NAMESPACE, storage_driver="memory", kube_apiserver="https://127.0.0.1:1")
    try:
        return config.install(str(CHART), RELEASE, copy.deepcopy(values), namespace=NAMESPACE, dry_run="client")
    finally:
        config.close()


@pytest.mark.parametrize("name", VALUE_SETS)
def test_good_values_install(name):
    release = client_install(VALUE_SETS[name])
    assert release["status"] == "pending-install"  # what a client-side dry run reports
    assert release["notes"].startswith("StudioOps")
    assert "kind: Deployment" in release["manifest"]


BAD_VALUES = [
    ({"api": {"replicas": 0}}, "/api/replicas"),
    ({"api": {"replica": 2}}, "'replica' not allowed"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"database": {"existingSecret": ""}}, "anyOf"),
    ({"database": {"url": "mysql://x@db/app"}}, "/database/url"),
    ({"storage": {"endpoint": ""}}, "/storage/endpoint"),
    ({"langfuse": {"host": "langfuse-web:3000"}}, "/langfuse/host"),
    ({"backups": {"daily": {"schedule": "every day"}}}, "/backups/daily/schedule"),
    ({"backups": {"zstdLevel": 30}}, "/backups/zstdLevel"),
    ({"api": {"resources": {"limits": {"memory": "lots"}}}}, "/api/resources/limits/memory"),
    ({"postgresql": {"cloudnativepg": {"enabled": "yes"}}}, "/postgresql/cloudnativepg/enabled"),
    ({"postgresql": {"cloudnativepg": {"imageName": "ghcr.io/cloudnative-pg/postgresql:latest"}}},
     "/postgresql/cloudnativepg/imageName"),
    ({"postgresql": {"cloudnativepg": {"imageName": "ghcr.io/cloudnative-pg/postgresql:19.1-standard-trixie"}}},
     "/postgresql/cloudnativepg/imageName"),  # newer than the image's pg_dump 18
    ({"postgresql": {"cloudnativepg": {"backup": {"schedule": "0 2 * * *"}}}},
     "/postgresql/cloudnativepg/backup/schedule"),
    ({"ingress": {"hosts": [{"host": "Not A Host", "paths": []}]}}, "/ingress/hosts/0"),
    ({"networkPolicy": {"extraEgressPorts": [70000]}}, "/networkPolicy/extraEgressPorts/0"),
    ({"storage": {"existingSecret": "", "accessKey": "", "secretKey": ""}}, "storage"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_bad_values_are_refused_at_install(values, where):
    with pytest.raises(helm.HelmError) as caught:
        client_install(values)
    assert where in str(caught.value), str(caught.value)


def test_schema_closes_every_object_in_values():
    """A key added to values.yaml without a schema entry (or a typo) would be refused at install."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value, node, path):
        if isinstance(value, dict) and node.get("properties") is not None:
            assert node.get("additionalProperties") is False, f"{path} is open"
            for key, sub in value.items():
                assert key in node["properties"], f"{path}.{key} is not in values.schema.json"
                walk(sub, node["properties"][key], f"{path}.{key}")

    walk(defaults, schema, "values")


# -- the README ---------------------------------------------------------------------------------------------------
def leaf_keys(value, prefix="") -> list[str]:
    if isinstance(value, dict) and value:
        return [k for key, sub in value.items() for k in leaf_keys(sub, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def test_chart_readme_documents_every_value_and_the_install_order():
    readme = (CHART / "README.md").read_text()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in leaf_keys(defaults):
        if re.search(r"\.(requests|limits|parameters)\.", key):
            continue  # resources and postgresql.conf parameters are documented as a whole
        assert f"`{key}`" in readme, f"{key} is not in the chart README's values table"
    order = [readme.index(s) for s in ("cloudnative-pg/cloudnative-pg", "seaweedfs/seaweedfs",
                                       "langfuse/langfuse", "infra/helm/studioops")]
    assert order == sorted(order)
    for section in ("## Upgrade and rollback", "## Backups and restore", "## Sizing"):
        assert section in readme
    assert "infra/helm/studioops/README.md" in (ROOT / "README.md").read_text()

