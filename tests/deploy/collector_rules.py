"""The rules the click collector's manifests must keep, with each other, the config and the image.

`collector_problems(objects, settings, config)` names every broken rule in words, nothing for a
sound deployment (as `rules.problems` does for the worker). `worker_objects` is what the worker's
rules look at: the rendered overlay without the collector's own objects."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from streams.collector.server import STOP_TIMEOUT_S
from streams.config import CollectorProcessSettings, parse_settings
from tests.deploy.rules import SECRET_MOUNT, _allows, _files_read, _selects, config_text

NAME = "imref-collector"
LABELS = {"app.kubernetes.io/name": NAME}


def is_collector(o: dict) -> bool:
    """An object of the collector's: it is named for it, or it selects or routes to its pods."""
    if o["metadata"]["name"] == NAME:
        return True
    backends = [p["backend"].get("service", {}).get("name") for r in o.get("spec", {}).get("rules", []) or []
                if isinstance(r, dict) for p in r.get("http", {}).get("paths", [])]
    return o["kind"] == "Ingress" and NAME in backends


def worker_objects(objects: list[dict]) -> list[dict]:
    return [o for o in objects if not is_collector(o)]


def parse_collector_config(text: str, secrets_dir: Path) -> CollectorProcessSettings:
    """The ConfigMap's config as the collector reads it, secret files pointed at empty stand-ins."""
    secrets_dir.mkdir(exist_ok=True)
    for name in set(re.findall(re.escape(SECRET_MOUNT) + r"/([\w.-]+)", text)):
        (secrets_dir / name).write_text("stand-in\n")
    return parse_settings(yaml.safe_load(text.replace(SECRET_MOUNT, str(secrets_dir))), source="ConfigMap config.yaml",
                          model=CollectorProcessSettings)


def _of(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == NAME]


def collector_problems(objects: list[dict], s: CollectorProcessSettings, config: dict) -> list[str]:
    found: list[str] = []
    c = s.collector
    deployments = _of(objects, "Deployment")
    if len(deployments) != 1:
        return [f"expected one Deployment {NAME}, found {len(deployments)}"]
    deployment = deployments[0]
    pod_meta, pod = deployment["spec"]["template"]["metadata"], deployment["spec"]["template"]["spec"]
    labels = pod_meta.get("labels", {})
    containers = [x for x in pod["containers"] if x["name"] == "collector"]
    if len(containers) != 1:
        return ["the Deployment needs one container named collector"]
    (box,) = containers
    ports = {p.get("name"): p["containerPort"] for p in box.get("ports", [])}
    port_of = lambda p: ports.get(p, p)  # noqa: E731 - named or numeric port
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = box.get("volumeMounts", [])

    # -- the process: the collector command, on the worker's config file ------------------------
    command = box.get("command", []) + box.get("args", [])
    if command[:3] != ["imref-stream", "collector", "--config"] or len(command) != 4:
        found.append("the container must run `imref-stream collector --config FILE`")
    else:
        mount = next((m for m in mounts if m["mountPath"] == command[3]), None)
        configmaps = [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"
                      and "config.yaml" in o.get("data", {})]
        source = volumes.get(mount["name"], {}).get("configMap", {}).get("name") if mount else None
        if not mount or mount.get("subPath") != "config.yaml" or source not in configmaps:
            found.append(f"the worker's config.yaml is not mounted at {command[3]}, where the collector reads it")
    if c.port not in ports.values():
        found.append(f"the collector does not declare its port {c.port}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = box.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or port_of(get.get("port")) != c.port:
            found.append(f"the collector's {probe} must GET {path} on its port {c.port}")

    # -- stateless, and holding no secret but the Kafka password -------------------------------
    if any("persistentVolumeClaim" in v for v in volumes.values()):
        found.append("the collector holds no state: no PersistentVolumeClaim")
    read = _files_read({k: v for k, v in config.items() if k == "kafka"})
    for path in read:
        mount = max((m for m in mounts if path.startswith(m["mountPath"].rstrip("/") + "/")),
                     key=lambda m: len(m["mountPath"]), default=None)
        if mount is None or "secret" not in volumes.get(mount["name"], {}):
            found.append(f"{path} (the collector's Kafka credentials) is not on a Secret volume")
    for name, volume in volumes.items():
        if "secret" not in volume:
            continue
        items = volume["secret"].get("items")
        mounted = next((m["mountPath"] for m in mounts if m["name"] == name), None)
        needed = sorted(Path(p).name for p in read if mounted and p.startswith(mounted.rstrip("/") + "/"))
        if items is None or sorted(i["path"] for i in items) != needed:
            found.append(f"the secret volume {name} must carry only what the collector reads ({needed}), "
                         "not the connections' credentials")

    # -- the pod ---------------------------------------------------------------------------------
    sc = pod.get("securityContext", {})
    if not sc.get("runAsNonRoot") or not sc.get("runAsUser"):
        found.append("the collector's pod must run as a non-root numeric user")
    if not box.get("securityContext", {}).get("readOnlyRootFilesystem"):
        found.append("the collector's root filesystem must be read-only")
    resources = box.get("resources", {})
    if not resources.get("requests", {}).get("cpu"):
        found.append("the collector needs a CPU request: the HPA scales on its utilisation")
    if not resources.get("requests", {}).get("memory") or not resources.get("limits", {}).get("memory"):
        found.append("the collector needs memory requests and limits")
    sleep = box.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = int(sleep[1]) if sleep[:1] == ["sleep"] and len(sleep) == 2 and sleep[1].isdigit() else 0
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace <= pause + STOP_TIMEOUT_S:
        found.append(f"terminationGracePeriodSeconds {grace} is not above the preStop pause ({pause} s) and the "
                     f"collector's stop ({STOP_TIMEOUT_S:g} s)")

    # -- service, autoscaler, budget -------------------------------------------------------------
    services = _of(objects, "Service")
    if not services or not _selects(services[0]["spec"].get("selector", {}), labels):
        found.append(f"no Service {NAME} selects the collector's pods")
    elif not any(p.get("name") == "http" and port_of(p.get("targetPort", p["port"])) == c.port
                 for p in services[0]["spec"].get("ports", [])):
        found.append(f"the Service {NAME} must send http to the collector's port {c.port}")
    hpas = _of(objects, "HorizontalPodAutoscaler")
    hpa = hpas[0]["spec"] if hpas else {}
    target = hpa.get("scaleTargetRef", {})
    if (target.get("kind"), target.get("name")) != ("Deployment", deployment["metadata"]["name"]):
        found.append("a HorizontalPodAutoscaler must scale the collector's Deployment")
    if not any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" for m in hpa.get("metrics", [])):
        found.append("the collector's HorizontalPodAutoscaler must scale on CPU")
    if hpa.get("minReplicas", 1) < 2:
        found.append("the collector's HorizontalPodAutoscaler must keep two pods at least (one node down, still served)")
    budgets = _of(objects, "PodDisruptionBudget")
    budget = budgets[0]["spec"] if budgets else {}
    if not _selects(budget.get("selector", {}).get("matchLabels", {}), labels) or \
            not 1 <= budget.get("minAvailable", 0) < hpa.get("minReplicas", 1):
        found.append("the collector's PodDisruptionBudget must keep one pod up and still let a node drain")

    # -- network: beacons in through the ingress controller only; out to DNS and Kafka only -------
    policies = [o["spec"] for o in objects if o["kind"] == "NetworkPolicy"
                and _selects(o["spec"]["podSelector"].get("matchLabels", {}), labels)]
    ingress = [r for p in policies if "Ingress" in p.get("policyTypes", []) for r in p.get("ingress", [])]
    egress = [r for p in policies if "Egress" in p.get("policyTypes", []) for r in p.get("egress", [])]
    if not any("Egress" in p.get("policyTypes", []) for p in policies) or not any(
            "Ingress" in p.get("policyTypes", []) for p in policies):
        found.append("no NetworkPolicy restricts the collector's ingress and egress")
    sources = set()
    for rule in ingress:
        if {port_of(p.get("port")) for p in rule.get("ports", [])} != {c.port}:
            found.append(f"the collector's ingress must open only its port {c.port}")
        for peer in rule.get("from", [{}]):
            sources.add(peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name"))
    if sources - {"ingress-nginx", "monitoring"} or "ingress-nginx" not in sources:
        found.append("the collector must be reached from the ingress controller (and Prometheus) only")
    brokers = {int(b.rsplit(":", 1)[1]) for b in s.kafka.brokers}
    opened = {(p.get("protocol", "TCP"), p.get("port"), p.get("endPort")) for r in egress for p in r.get("ports", [])}
    if any(not r.get("ports") for r in egress) or \
            opened - {("UDP", 53, None), ("TCP", 53, None)} - {("TCP", p, None) for p in (9092, 9093)}:
        found.append("the collector's egress must open DNS and the Kafka ports only")
    if not _allows(egress, 53, "UDP", in_cluster=True) or not all(_allows(egress, p, in_cluster=True) for p in brokers):
        found.append("the collector cannot reach DNS or the brokers")

    # -- the route: under the shop's own hosts, the public path only -----------------------------
    routes = [(r.get("host"), p) for o in objects if o["kind"] == "Ingress" for r in o["spec"].get("rules", [])
              for p in r.get("http", {}).get("paths", []) if p["backend"].get("service", {}).get("name") == NAME]
    shop_hosts = {re.sub(r"^https?://|:\d+$", "", origin) for origin in c.allowed_origins}
    for host, path in routes:
        if path.get("pathType") != "Prefix" or path.get("path", "").rstrip("/") != c.base_path or not c.base_path:
            found.append(f"the Ingress must route exactly collector.base_path {c.base_path or '/'} to the collector, "
                         "so /healthz, /readyz and /metrics stay inside the cluster")
        port = path["backend"]["service"].get("port", {})
        if port.get("name") != "http" and port.get("number") != c.port:
            found.append("the Ingress must send to the collector Service's http port")
        if host not in shop_hosts:
            found.append(f"the Ingress host {host} is not a host of collector.allowed_origins: the collector "
                         "belongs under the shop's own host, where Safari keeps its cookies")
    if routes and c.proxy_hops < 1:
        found.append("behind the ingress controller collector.proxy_hops must be 1 or more, or every visitor "
                     "shares the controller's rate-limit bucket")
    return found

