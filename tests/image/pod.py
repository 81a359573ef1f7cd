"""The StatefulSet's worker container as podman flags, applied the way the kubelet applies them.

The image test runs the container with exactly these, and tests/unit/test_deploy.py renders the
manifests through the same function: a securityContext field or a volume kind this module does
not know stops both, so the StatefulSet cannot ask for a setting the image was never run with.
Resources, probes and ports are not translated: the test reads the probes' paths itself and,
on the host network, gives the web server a free port."""
from __future__ import annotations

import os
from pathlib import Path

POD_SECURITY = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile"}
CONTAINER_SECURITY = {"runAsNonRoot", "runAsUser", "runAsGroup", "allowPrivilegeEscalation",
                      "readOnlyRootFilesystem", "capabilities"}


class Untranslated(ValueError):
    """The manifest asks for something the image test does not run with."""


def worker(sts: dict) -> tuple[dict, dict]:
    pod = sts["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def security_args(sts: dict) -> list[str]:
    pod, container = worker(sts)
    pod_sc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
    for where, given, known in (("pod", pod_sc, POD_SECURITY), ("container", sc, CONTAINER_SECURITY)):
        if unknown := sorted(set(given) - known):
            raise Untranslated(f"the image test does not apply the {where} securityContext's {', '.join(unknown)}")
    merged = {**pod_sc, **sc}  # the container's settings win, as in Kubernetes
    uid, gid = merged.get("runAsUser"), merged.get("runAsGroup")
    if uid is None or gid is None:
        raise Untranslated("runAsUser and runAsGroup must be set: the test runs with the uid and gid the pod gets")
    if merged.get("runAsNonRoot") and uid == 0:
        raise Untranslated("runAsNonRoot with runAsUser 0: the kubelet refuses to start it")
    args = ["--user", f"{uid}:{gid}"]
    if "fsGroup" in pod_sc:
        args += ["--group-add", str(pod_sc["fsGroup"])]
    seccomp = pod_sc.get("seccompProfile", {}).get("type")
    if seccomp not in (None, "RuntimeDefault"):  # RuntimeDefault is podman's default profile: no flag
        raise Untranslated(f"seccompProfile {seccomp}: the test runs with the runtime's default profile")
    if sc.get("readOnlyRootFilesystem"):
        # podman would otherwise mount writable tmpfs on /tmp, /run and /var/tmp; Kubernetes does not
        args += ["--read-only", "--read-only-tmpfs=false"]
    caps = sc.get("capabilities", {})
    if unknown := sorted(set(caps) - {"add", "drop"}):
        raise Untranslated(f"the image test does not apply capabilities.{', '.join(unknown)}")
    args += [a for cap in caps.get("drop", []) for a in ("--cap-drop", cap)]
    args += [a for cap in caps.get("add", []) for a in ("--cap-add", cap)]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    return args


def volume_args(sts: dict, sources: dict[str, Path]) -> list[str]:
    """Every mount of the worker container; `sources` gives the host path behind each named volume
    (a file for a ConfigMap's subPath, a folder otherwise; an emptyDir needs none)."""
    pod, container = worker(sts)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}
    args = []
    for mount in container.get("volumeMounts", []):
        name, path = mount["name"], mount["mountPath"]
        volume = volumes.get(name, {})
        if "emptyDir" in volume:
            args += ["--tmpfs", f"{path}:rw,nosuid,nodev"]
            continue
        if name not in claims and not ({"configMap", "secret"} & set(volume)):
            raise Untranslated(f"volume {name}: the image test knows claims, configMaps, secrets and emptyDirs")
        if name not in sources:
            raise Untranslated(f"volume {name} has no host path in the image test")
        read_only = mount.get("readOnly") or "configMap" in volume or "secret" in volume
        args += ["-v", f"{sources[name]}:{path}:{'ro' if read_only else 'rw'}"]
    return args


def env_args(sts: dict, pod_name: str) -> list[str]:
    _, container = worker(sts)
    args = []
    for e in container.get("env", []):
        if "value" in e:
            value = e["value"]
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            value = pod_name
        else:
            raise Untranslated(f"env {e['name']}: the image test gives literals and the pod name only")
        args += ["-e", f"{e['name']}={value}"]
    return args


def grant_fs_group(folder: Path, gid: int) -> None:
    """What the kubelet does to a volume for fsGroup: group-owned, group-writable, set-gid."""
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, -1, gid)
        path.chmod(path.stat().st_mode | (0o2070 if path.is_dir() else 0o060))
