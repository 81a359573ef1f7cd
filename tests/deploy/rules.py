"""The rules deploy/ must keep, between the manifests, the config they mount and the image.

`problems(d)` names every broken rule in words and returns nothing for a sound deployment, so
a test can break one thing in a copy and see exactly that rule fire. The schema checks (the
Kubernetes API's and ours for the custom resources) live in the tests; these are what no
schema can know: how one object must agree with another and with the worker's settings."""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from fsspec.core import split_protocol

from streams.config import KafkaSettings, Settings, parse_settings

SECRET_MOUNT = "/etc/imref/secrets"
SECRETISH_NAME = re.compile(r"pass|secret|token|key|credential|private", re.I)
# what a credential looks like when someone pastes one: PEM, or a long base64/hex run
SECRETISH_VALUE = re.compile(r"-----BEGIN|^[A-Za-z0-9+/=_-]{32,}$")
# impact's and partners' transfer ports: FTP, SFTP, SMTPS, submission, FTPS (implicit)
TRANSFER_PORTS = (21, 22, 465, 587, 990)
# fsspec protocols of object stores, every one reached over HTTPS (443)
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss"})


@dataclass
class Deployment:
    objects: list[dict]      # `kubectl kustomize` of the overlay
    topics: list[dict]       # `kubectl kustomize` of the overlay's topics
    settings: Settings       # the ConfigMap's config.yaml, validated by the worker's own parser
    config: dict             # the same, as raw YAML (paths before any stand-in replacement)
    dockerfile: str
    dockerignore: str
    topology: tuple[list[str], list[str]]  # app_topology(settings)


def config_text(objects: list[dict]) -> str:
    cms = [o for o in objects if o["kind"] == "ConfigMap" and "config.yaml" in o.get("data", {})]
    assert len(cms) == 1, f"expected one ConfigMap with config.yaml, found {len(cms)}"
    return cms[0]["data"]["config.yaml"]


def parse_mounted_config(text: str, secrets_dir: Path) -> Settings:
    """The config as the pod sees it. SecretRef checks at parse time that its file exists (a
    missing secret must stop start-up), and the files exist only in the pod: the Secret mount
    is pointed at empty stand-ins, nothing is read from them."""
    secrets_dir.mkdir(exist_ok=True)
    for name in set(re.findall(re.escape(SECRET_MOUNT) + r"/([\w.-]+)", text)):
        (secrets_dir / name).write_text("stand-in\n")
    return parse_settings(yaml.safe_load(text.replace(SECRET_MOUNT, str(secrets_dir))), source="ConfigMap config.yaml")


def app_topology(s: Settings) -> tuple[list[str], list[str]]:
    """(source topics the worker consumes, table changelog topics) of the real Faust app.

    Built, never started: nothing connects. The broker security is dropped because it would load
    the pod's CA file; it does not change which topics and tables exist."""
    from streams.runtime.app import create_app

    app = create_app(s.model_copy(update={"kafka": KafkaSettings()}))
    sources = sorted({t for channel in app.topics for t in channel.topics} - {t.changelog_topic.get_topic_name() for t in app.tables.values()})
    changelogs = sorted(table.changelog_topic.get_topic_name() for table in app.tables.values())
    return sources, changelogs


def worker_topics(s: Settings, topology: tuple[list[str], list[str]]) -> dict[str, dict]:
    """Every topic the worker reads or writes for these settings -> what its KafkaTopic needs."""
    sources, changelogs = topology
    same = {"partitions": s.topics.partitions}
    needed: dict[str, dict] = {value: {} for _, value in s.topics if isinstance(value, str)}
    needed.update({t: dict(same) for t in sources})
    needed.update({changelog: {**same, "compact": True} for changelog in changelogs})
    # Faust's LeaderAssignor: one partition, the leader owns it
    needed[f"{s.app_id}-__assignor-__leader"] = {"partitions": 1}
    pulls = [c for c in s.connections if c.methodology == "pull_from_impact"]
    if pulls:
        needed[f"{s.app_id}-fetched-reports"] = {"compact": True}
        needed.update({c.target_topic: {} for c in pulls if getattr(c, "target_topic", None)})
    return needed


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _in_cluster(rule: dict) -> bool:
    return bool(rule.get("to")) and all("namespaceSelector" in peer or "podSelector" in peer for peer in rule["to"])


def _allows(rules: list[dict], port: int, protocol: str = "TCP", in_cluster: bool = False) -> bool:
    # in_cluster: the internet-wide rules (passive FTP's high ports) do not reach pod addresses
    return any(p.get("protocol", "TCP") == protocol and isinstance(p.get("port"), int)
               and p["port"] <= port <= p.get("endPort", p["port"])
               for r in rules if not in_cluster or _in_cluster(r) for p in r.get("ports", []))


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", dockerfile)
    return [(m[1].upper(), m[2].strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.M)
            if not m[0].lstrip().startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching line wins; a pattern matching a folder covers its files."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = path.split("/")
        if any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def problems(d: Deployment) -> list[str]:
    found: list[str] = []
    s = d.settings
    sts = one(d.objects, "StatefulSet")
    pod_meta, pod = sts["spec"]["template"]["metadata"], sts["spec"]["template"]["spec"]
    labels = pod_meta.get("labels", {})
    (worker,) = [c for c in pod["containers"] if c["name"] == "worker"]
    port_names = {p.get("name"): p["containerPort"] for p in worker.get("ports", [])}
    web_port = lambda p: port_names.get(p, p)  # noqa: E731 - named or numeric port
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = worker.get("volumeMounts", [])

    # -- topics: one KafkaTopic for each, co-partitioned where the join needs it ----------------
    by_name = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in d.topics}
    for topic, need in worker_topics(s, d.topology).items():
        if topic not in by_name:
            found.append(f"no KafkaTopic for {topic}")
            continue
        spec = by_name[topic]["spec"]
        if "partitions" in need and spec.get("partitions") != need["partitions"]:
            found.append(f"{topic} has {spec.get('partitions')} partitions, needs {need['partitions']}")
        if need.get("compact") and spec.get("config", {}).get("cleanup.policy") != "compact":
            found.append(f"{topic} is not compacted")
    clicks, items = by_name.get(s.topics.clicks), by_name.get(s.topics.order_items)
    if clicks and items and clicks["spec"].get("partitions") != items["spec"].get("partitions"):
        found.append("clicks and order items are not co-partitioned")
    clusters = {t["metadata"].get("labels", {}).get("strimzi.io/cluster") for t in d.topics}
    if None in clusters or len(clusters) != 1:
        found.append("every KafkaTopic needs the same strimzi.io/cluster label, or no operator manages it")

    # -- secrets: mounted files only, never values ----------------------------------------------
    for o in d.objects:
        if o["kind"] == "Secret" and (o.get("data") or o.get("stringData")):
            found.append(f"Secret {o['metadata']['name']} carries values in the manifests")
    for c in pod["containers"] + pod.get("initContainers", []):
        for e in c.get("env", []):
            if "value" in e and (SECRETISH_NAME.search(e["name"]) or SECRETISH_VALUE.search(str(e["value"]))):
                found.append(f"env {e['name']} is a literal: mount it from a Secret")
    if re.search(r"^\s*(password|private_key):\s*[^{\s]", config_text(d.objects), re.M):
        found.append("the ConfigMap holds a credential value")
    for path in _files_read(d.config):
        mount = max((m for m in mounts if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")),
                    key=lambda m: len(m["mountPath"]), default=None)
        if mount is None or "secret" not in volumes.get(mount["name"], {}):
            found.append(f"{path} (named in the config) is not on a Secret volume")

    # -- the pod: probes, graceful stop, static membership, state, resources, user ------------
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = worker.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or web_port(get.get("port")) != s.web.port:
            found.append(f"{probe} must GET {path} on the web port {s.web.port}")
    if s.web.port not in port_names.values():
        found.append(f"the worker does not declare the web port {s.web.port}")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= s.stop_timeout_s:
        found.append(f"terminationGracePeriodSeconds {grace} is not above stop_timeout_s {s.stop_timeout_s:g}")
    instance = [e for e in worker.get("env", []) if e["name"] == "IMREF_INSTANCE_ID"]
    if not instance or instance[0].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        found.append("IMREF_INSTANCE_ID must be the pod name (static membership)")
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    if s.store == "rocksdb://" and not any(m["name"] in claims and Path(s.data_dir).is_relative_to(m["mountPath"])
                                            for m in mounts):
        found.append(f"data_dir {s.data_dir} is not on a volumeClaimTemplate")
    resources = worker.get("resources", {})
    if not resources.get("requests", {}).get("memory") or not resources.get("limits", {}).get("memory"):
        found.append("the worker needs memory requests and limits")
    sc = pod.get("securityContext", {})
    if not sc.get("runAsNonRoot") or not sc.get("runAsUser"):
        found.append("the pod must run as a non-root numeric user")

    # -- services and disruption budget ----------------------------------------------------------
    services = [o for o in d.objects if o["kind"] == "Service"]
    headless = [x for x in services if x["spec"].get("clusterIP") == "None"]
    if not headless or sts["spec"].get("serviceName") != headless[0]["metadata"]["name"]:
        found.append("the StatefulSet's serviceName must be a headless Service")
    if not [x for x in services if x["spec"].get("clusterIP") != "None"]:
        found.append("no regular Service for the web port")
    for svc in services:
        if not _selects(svc["spec"].get("selector", {}), labels):
            found.append(f"Service {svc['metadata']['name']} selects no worker pod")
        if not any(p["port"] == s.web.port and p.get("name") == "http" and web_port(p.get("targetPort", p["port"])) == s.web.port
                   for p in svc["spec"].get("ports", [])):
            found.append(f"Service {svc['metadata']['name']} must serve http on {s.web.port}")
    pdb = one(d.objects, "PodDisruptionBudget")["spec"]
    if pdb.get("maxUnavailable") != 1 or not _selects(pdb.get("selector", {}).get("matchLabels", {}), labels):
        found.append("the PodDisruptionBudget must allow one worker down at a time")

    # -- scaling: never more workers than partitions, on the right lag -------------------------
    scaled = one(d.objects, "ScaledObject")["spec"]
    if scaled["scaleTargetRef"].get("kind") != "StatefulSet" or scaled["scaleTargetRef"]["name"] != sts["metadata"]["name"]:
        found.append("the ScaledObject must scale the StatefulSet")
    if scaled.get("maxReplicaCount", 100) > s.topics.partitions:
        found.append(f"maxReplicaCount {scaled.get('maxReplicaCount', 100)} exceeds {s.topics.partitions} partitions")
    if scaled.get("minReplicaCount", 0) > scaled.get("maxReplicaCount", 100):
        found.append("minReplicaCount is above maxReplicaCount")
    if sts["spec"].get("replicas", 1) > s.topics.partitions:
        found.append("more replicas than partitions")
    kafka_triggers = [t for t in scaled["triggers"] if t["type"] == "kafka"]
    brokers = ",".join(b.split("://", 1)[-1] for b in s.kafka.brokers)
    if len(kafka_triggers) != 1:
        found.append("the ScaledObject needs one kafka trigger")
    else:
        meta = kafka_triggers[0]["metadata"]
        if (meta.get("consumerGroup"), meta.get("topic")) != (s.app_id, s.topics.order_items):
            found.append("the KEDA trigger must watch the app_id group's lag on order items")
        if meta.get("bootstrapServers") != brokers:
            found.append(f"the KEDA trigger's bootstrapServers must be the config's brokers ({brokers})")

    # -- network: in only to the web port from monitoring or this namespace; out only where needed
    policies = [o["spec"] for o in d.objects if o["kind"] == "NetworkPolicy"
                and _selects(o["spec"]["podSelector"].get("matchLabels", {}), labels)]
    ingress = [r for p in policies if "Ingress" in p.get("policyTypes", []) for r in p.get("ingress", [])]
    egress_policies = [p for p in policies if "Egress" in p.get("policyTypes", [])]
    egress = [r for p in egress_policies for r in p.get("egress", [])]
    if not policies or not egress_policies:
        found.append("no NetworkPolicy restricts the worker's ingress and egress")
    for rule in ingress:
        ports = {web_port(p.get("port")) for p in rule.get("ports", [])}
        if ports != {s.web.port}:
            found.append(f"ingress must open only the web port {s.web.port}, not {sorted(map(str, ports)) or 'every port'}")
        if not rule.get("from") or any("ipBlock" in peer for peer in rule["from"]):
            found.append("ingress must name its sources (namespaces or pods), never any address")
    if not any(peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring"
               for r in ingress for peer in r.get("from", [])):
        found.append("Prometheus (namespace monitoring) cannot reach the web port")
    for rule in egress:
        if not rule.get("ports"):
            found.append("an egress rule without ports opens every port")
    if not _allows(egress, 53, "UDP", in_cluster=True):
        found.append("egress to DNS (UDP 53) is closed")
    for broker in s.kafka.brokers:
        port = int(broker.rsplit(":", 1)[1])
        if not _allows(egress, port, in_cluster=True):
            found.append(f"egress to the broker port {port} is closed")
    wanted = set(TRANSFER_PORTS) | {c.port for c in s.connections if isinstance(getattr(c, "port", None), int)}
    for port in sorted(wanted):
        if not _allows(egress, port):
            found.append(f"egress to port {port} (connections) is closed")
    if not any(p.get("endPort", 0) - p.get("port", 0) >= 1000 for r in egress for p in r.get("ports", [])):
        found.append("no egress range for passive FTP data connections")
    stores = _object_store_urls(d.config)
    if stores and not _allows(egress, 443):
        found.append(f"egress to port 443 is closed, and {stores[0]} is an object store reached over HTTPS")
    if _allows(egress, 443) and not stores:
        found.append("egress to port 443 is open, yet no connection names an object store")

    found += image_problems(d, sts)
    return found


def _object_store_urls(config: dict) -> list[str]:
    """A connection's fsspec `url` or pull `target_url` that names an object store (chained URLs too).

    Read from the config as written: parsing it needs the store's fsspec backend installed."""
    urls = [c.get(key) for c in config.get("connections", []) for key in ("url", "target_url")]
    return [url for url in urls if isinstance(url, str)
            and any(split_protocol(part)[0] in OBJECT_STORES for part in url.split("::"))]


def _files_read(config: dict) -> list[str]:
    """Credential files, pinned host keys and CA bundles the config makes the worker read."""
    out = []
    def walk(node, key=None):
        if isinstance(node, dict):
            if key in ("password", "private_key") and "file" in node:
                out.append(str(node["file"]))
            for k, v in node.items():
                if k in ("known_hosts", "ca_file") and isinstance(v, str):
                    out.append(v)
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
    walk(config)
    return out


def image_problems(d: Deployment, sts: dict) -> list[str]:
    found = []
    steps = _instructions(d.dockerfile)
    # a FROM may name a build argument declared before the first stage: judge its default
    defaults = {}
    for op, arg in steps:
        if op == "FROM":
            break
        if op == "ARG" and "=" in arg:
            name, _, value = arg.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    froms = [re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m[1], m[0]), arg.split()[0])
             for op, arg in steps if op == "FROM"]
    if len(froms) < 2:
        found.append("the image must be multi-stage (build tools stay out of the runtime stage)")
    for image in froms:
        if image.endswith(":latest") or not re.search(r":\d+\.\d+\.\d+", image):
            found.append(f"base image {image} is not pinned to a full version")
    users = [arg for op, arg in steps if op == "USER"]
    uid = users[-1].split(":")[0] if users else ""
    if not uid.isdigit() or uid == "0":
        found.append("the image's last USER must be a numeric non-root user")
    exposed = {int(p.split("/")[0]) for op, arg in steps if op == "EXPOSE" for p in arg.split()}
    if d.settings.web.port not in exposed:
        found.append(f"the image does not EXPOSE the web port {d.settings.web.port}")
    entry = [arg for op, arg in steps if op == "ENTRYPOINT"]
    try:
        entrypoint = json.loads(entry[-1]) if entry else []
    except json.JSONDecodeError:
        entrypoint = []  # shell form: SIGTERM would reach /bin/sh, not the worker
    if entrypoint[:3] != ["imref-stream", "worker", "--config"] or len(entrypoint) != 4:
        found.append("ENTRYPOINT must be the exec form of `imref-stream worker --config FILE`")
    else:
        mounts = sts["spec"]["template"]["spec"]["containers"][0].get("volumeMounts", [])
        if not any(m["mountPath"] == entrypoint[3] and m.get("subPath") == "config.yaml" for m in mounts):
            found.append(f"the ConfigMap's config.yaml is not mounted at {entrypoint[3]}, where the ENTRYPOINT reads it")
        if any(c.get("command") or c.get("args") for c in sts["spec"]["template"]["spec"]["containers"]):
            found.append("the worker container overrides the image's ENTRYPOINT")
    for op, arg in steps:
        if op in ("ENV", "ARG"):
            names = [m[1] for m in re.finditer(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", arg)]
            found += [f"{op} {n} would bake a credential into the image" for n in names if SECRETISH_NAME.search(n)]
    runs = " ".join(arg for op, arg in steps if op == "RUN")
    for lock in ("deploy/requirements.lock", "deploy/build-requirements.lock"):
        if f"--require-hashes -r {lock}" not in runs:
            found.append(f"the image must install {lock} with --require-hashes")
    if not re.search(r"pip install --no-deps --no-build-isolation \.", runs):
        found.append("the project must be built with the pinned setuptools (--no-deps --no-build-isolation)")

    patterns = [ln.strip() for ln in d.dockerignore.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not patterns or patterns[0] not in ("*", "**"):
        found.append(".dockerignore must start by excluding everything, so no stray key enters the build context")
    for op, arg in steps:
        if op == "COPY" and "--from" not in arg:
            for src in arg.split()[:-1]:
                if _ignored(src.rstrip("/"), patterns):
                    found.append(f".dockerignore excludes {src}, which the Dockerfile copies")
    for leak in ("deploy/overlays/example/secrets/kafka-password", "id_ed25519", ".env", "known_hosts"):
        if not _ignored(leak, patterns):
            found.append(f".dockerignore lets {leak} into the build context")
    return found
