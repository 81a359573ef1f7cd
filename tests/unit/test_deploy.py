"""deploy/ validated offline: the kustomize output renders (tests/support/kustomize.py), every built-in
object passes the Kubernetes JSON schemas (kubernetes-validate, strict), and our own rules hold
between the manifests and the config they mount. Each rule is shown to catch a broken copy."""
from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from streams.config import Settings, parse_settings
from tests.support.kustomize import finish, kubectl_render, render, subset_render

DEPLOY = Path(__file__).parents[2] / "deploy"
OVERLAY = DEPLOY / "overlays" / "example"
K8S_VERSION = "1.30.0"
CRDS = {"KafkaTopic", "ScaledObject", "TriggerAuthentication"}
SECRET_MOUNT = "/etc/imref/secrets"
SECRETISH = re.compile(r"pass|secret|token|key|credential", re.I)


def mounted_config(objects: list[dict], tmp_path: Path) -> Settings:
    """The config as the pod sees it, with the Secret mount pointed at stand-in files."""
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("imref-stream-config")]
    text = cm["data"]["config.yaml"]
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    for name in set(re.findall(re.escape(SECRET_MOUNT) + r"/([\w.-]+)", text)):
        (secrets / name).write_text("stand-in\n")
    return parse_settings(yaml.safe_load(text.replace(SECRET_MOUNT, str(secrets))), source="ConfigMap config.yaml")


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def problems(objects: list[dict], topics: list[dict], s: Settings, dockerfile: str) -> list[str]:
    """Every broken rule, in words; empty when the deployment is sound."""
    found: list[str] = []
    sts = one(objects, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (worker,) = [c for c in pod["containers"] if c["name"] == "worker"]
    ports = {p.get("name"): p["containerPort"] for p in worker.get("ports", [])}

    # co-partitioning and one KafkaTopic per topic the worker uses
    by_name = {t["spec"].get("topicName", t["metadata"]["name"]): t["spec"] for t in topics}
    needed = [s.topics.clicks, s.topics.order_items, s.topics.unattributed, s.topics.dead_letter,
              f"{s.app_id}-clicks-changelog", f"{s.app_id}-batch-cuts-changelog"]
    found += [f"no KafkaTopic for {t}" for t in needed if t not in by_name]
    for t in (s.topics.clicks, s.topics.order_items, f"{s.app_id}-clicks-changelog", f"{s.app_id}-batch-cuts-changelog"):
        if t in by_name and by_name[t]["partitions"] != s.topics.partitions:
            found.append(f"{t} has {by_name[t]['partitions']} partitions, topics.partitions is {s.topics.partitions}")
    for t in needed[4:]:
        if t in by_name and by_name[t].get("config", {}).get("cleanup.policy") != "compact":
            found.append(f"changelog {t} is not compacted")

    # no secret values in the manifests or the config
    for o in objects:
        if o["kind"] == "Secret" and (o.get("data") or o.get("stringData")):
            found.append(f"Secret {o['metadata']['name']} carries values in the manifests")
    for c in pod["containers"]:
        for e in c.get("env", []):
            if "value" in e and SECRETISH.search(e["name"]):
                found.append(f"env {e['name']} is a literal: mount it from a Secret")
    cm_text = yaml.safe_dump([o for o in objects if o["kind"] == "ConfigMap"])
    if re.search(r"(password|private_key):\s*[^{\s]", cm_text):
        found.append("the ConfigMap holds a credential value")

    # probes on the web port, graceful stop above the flush bound, static membership
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = worker.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or ports.get(get.get("port"), get.get("port")) != s.web.port:
            found.append(f"{probe} must GET {path} on the web port {s.web.port}")
    if pod.get("terminationGracePeriodSeconds", 30) <= s.stop_timeout_s:
        found.append(f"terminationGracePeriodSeconds {pod.get('terminationGracePeriodSeconds', 30)} "
                     f"is not above stop_timeout_s {s.stop_timeout_s}")
    instance = [e for e in worker.get("env", []) if e["name"] == "IMREF_INSTANCE_ID"]
    if not instance or instance[0].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        found.append("IMREF_INSTANCE_ID must be the pod name (static membership)")

    # RocksDB state on the pod's volume claim
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    if s.store == "rocksdb://" and not any(m["name"] in claims and Path(s.data_dir).is_relative_to(m["mountPath"])
                                            for m in worker.get("volumeMounts", [])):
        found.append(f"data_dir {s.data_dir} is not on a volumeClaimTemplate")
    if not worker.get("resources", {}).get("requests") or not worker.get("resources", {}).get("limits"):
        found.append("the worker needs resource requests and limits")

    # scaling never beyond the partitions, on the right group and topic
    scaled = one(objects, "ScaledObject")
    if scaled["spec"]["maxReplicaCount"] > s.topics.partitions:
        found.append(f"maxReplicaCount {scaled['spec']['maxReplicaCount']} exceeds {s.topics.partitions} partitions")
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "kafka"]
    if (trigger["metadata"]["consumerGroup"], trigger["metadata"]["topic"]) != (s.app_id, s.topics.order_items):
        found.append("the KEDA trigger must watch the app_id group's lag on order items")
    if sts["spec"].get("replicas", 1) > s.topics.partitions:
        found.append("more replicas than partitions")

    # non-root, both in the pod and in the image
    sc = pod.get("securityContext", {})
    if not sc.get("runAsNonRoot") or not sc.get("runAsUser"):
        found.append("the pod must run as a non-root numeric user")
    user = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    if not user or not user[-1].split(":")[0].isdigit() or user[-1].split(":")[0] == "0":
        found.append("the image's last USER must be a numeric non-root user")
    for image in re.findall(r"^FROM\s+(\S+)", dockerfile, re.M):
        if ":" not in image or image.endswith(":latest") or not re.search(r":\d+\.\d+\.\d+", image):
            found.append(f"base image {image} is not pinned to a full version")
    if not one(objects, "PodDisruptionBudget")["spec"].get("maxUnavailable"):
        found.append("the PodDisruptionBudget must bound unavailable pods")
    one(objects, "NetworkPolicy", "imref-stream")
    return found


@pytest.fixture(scope="module")
def rendered():
    return render(OVERLAY), [t for t in render(OVERLAY / "topics") if t["kind"] == "KafkaTopic"]


@pytest.fixture
def deployment(rendered, tmp_path):
    objects, topics = copy.deepcopy(rendered)
    return objects, topics, mounted_config(objects, tmp_path), (DEPLOY / "Dockerfile").read_text()


@pytest.mark.parametrize("path", [OVERLAY, OVERLAY / "topics", DEPLOY / "base"], ids=["overlay", "topics", "base"])
def test_the_fallback_renderer_matches_kubectl_kustomize(path):
    by_kubectl = kubectl_render(path)
    if by_kubectl is None:
        pytest.skip("kubectl is not installed here; the fallback renderer is in use")
    unhashed = lambda objs: sorted((yaml.safe_dump(o).replace(o["metadata"]["name"], "CM") if o["kind"] == "ConfigMap" else  # noqa: E731
                                    re.sub(r"imref-stream-config-\w+", "CM", yaml.safe_dump(o))) for o in objs)
    assert unhashed(finish(subset_render(path))) == unhashed(by_kubectl)


def test_every_builtin_object_passes_the_kubernetes_schemas(rendered):
    objects, _ = rendered
    kinds = {o["kind"] for o in objects}
    assert {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    for o in objects:
        if o["kind"] not in CRDS:
            kubernetes_validate.validate(o, K8S_VERSION, strict=True)


def test_schema_validation_rejects_a_misspelt_field(rendered):
    sts = copy.deepcopy(one(rendered[0], "StatefulSet"))
    sts["spec"]["template"]["spec"]["terminationGracePeriodSecs"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)


def test_base_renders_and_its_config_is_valid(tmp_path):
    objects = render(DEPLOY / "base")
    s = mounted_config(objects, tmp_path)
    assert s.store == "rocksdb://" and s.kafka.security_protocol == "SASL_SSL"


def test_the_example_deployment_breaks_no_rule(deployment):
    objects, topics, settings, dockerfile = deployment
    assert settings.collector.enabled and len(settings.connections) == 2
    assert problems(objects, topics, settings, dockerfile) == []


def _statefulset(objects):
    return one(objects, "StatefulSet")["spec"]


def _worker(objects):
    return _statefulset(objects)["template"]["spec"]["containers"][0]


def _topic(topics, name):
    return next(t for t in topics if t["spec"]["topicName"] == name)["spec"]


BREAKAGES = {
    "order items not co-partitioned": (lambda o, t: _topic(t, "imref.order-items").update(partitions=6),
                                       "imref.order-items has 6 partitions"),
    "dead-letter topic missing": (lambda o, t: t.remove(next(x for x in t if x["spec"]["topicName"] == "imref.dead-letter")),
                                  "no KafkaTopic for imref.dead-letter"),
    "changelog not compacted": (lambda o, t: _topic(t, "imref-stream-clicks-changelog")["config"].pop("cleanup.policy"),
                                "changelog imref-stream-clicks-changelog is not compacted"),
    "password as env literal": (lambda o, t: _worker(o)["env"].append({"name": "KAFKA_PASSWORD", "value": "hunter2"}),
                                "env KAFKA_PASSWORD is a literal"),
    "secret values in a Secret": (lambda o, t: o.append({"kind": "Secret", "metadata": {"name": "x"}, "stringData": {"a": "b"}}),
                                  "Secret x carries values"),
    "no readiness probe": (lambda o, t: _worker(o).pop("readinessProbe"), "readinessProbe must GET /readyz"),
    "grace period below the flush bound": (lambda o, t: _statefulset(o)["template"]["spec"].update(terminationGracePeriodSeconds=15),
                                           "terminationGracePeriodSeconds 15 is not above"),
    "no static membership": (lambda o, t: _worker(o)["env"].clear(), "IMREF_INSTANCE_ID"),
    "state not on the claim": (lambda o, t: _statefulset(o).pop("volumeClaimTemplates"), "is not on a volumeClaimTemplate"),
    "more workers than partitions": (lambda o, t: one(o, "ScaledObject")["spec"].update(maxReplicaCount=24),
                                     "maxReplicaCount 24 exceeds 12 partitions"),
    "root pod": (lambda o, t: _statefulset(o)["template"]["spec"]["securityContext"].pop("runAsNonRoot"), "non-root"),
}


@pytest.mark.parametrize("name", BREAKAGES)
def test_each_rule_catches_its_breakage(deployment, name):
    objects, topics, settings, dockerfile = deployment
    breakage, expected = BREAKAGES[name]
    breakage(objects, topics)
    assert any(expected in p for p in problems(objects, topics, settings, dockerfile)), name


def test_image_rules_catch_a_root_user_and_a_floating_base(deployment):
    objects, topics, settings, dockerfile = deployment
    broken = dockerfile.replace("USER 10001:10001", "USER root").replace("python:3.11.7-slim-bookworm AS build",
                                                                         "python:latest AS build")
    found = problems(objects, topics, settings, broken)
    assert "the image's last USER must be a numeric non-root user" in found
    assert "base image python:latest is not pinned to a full version" in found


def test_a_credential_written_into_the_config_stops_start_up(deployment, tmp_path):
    objects, *_ = deployment
    cm = one(objects, "ConfigMap")
    cm["data"]["config.yaml"] = cm["data"]["config.yaml"].replace(
        "password: {file: /etc/imref/secrets/impact-ftp-password}", "password: hunter2")
    with pytest.raises(Exception, match=r"connections\.0\.password"):
        mounted_config(objects, tmp_path)


def test_the_image_installs_only_pinned_dependencies():
    lock = (DEPLOY / "requirements.lock").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", lock, re.M)
    names = {n.lower().replace("_", "-") for n, _ in pins}
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]
    wanted = {re.match(r"[A-Za-z0-9_.-]+", d)[0].lower().replace("_", "-")
              for d in project["dependencies"] + project["optional-dependencies"]["rocksdb"]}
    assert wanted <= names, f"not in the lock (run `make lock`): {sorted(wanted - names)}"
    assert "--hash=sha256:" in lock and "file://" not in lock
    assert "--require-hashes -r deploy/requirements.lock" in (DEPLOY / "Dockerfile").read_text()
