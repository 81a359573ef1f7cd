"""Renders deploy/'s kustomizations: with `kubectl kustomize` where kubectl is installed, else
with the small subset of kustomize that deploy/ uses (resources, namespace, labels, images,
configMapGenerator, strategic-merge patches). The tests compare the two where both exist, so the
subset cannot drift from kustomize unnoticed. (No kustomize binary is installable from PyPI,
npm or Debian's current packages; Debian's kubectl 1.20 embeds a kustomize too old for v1beta1.)"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import yaml


def kubectl_render(path: Path) -> list[dict] | None:
    if not shutil.which("kubectl"):
        return None
    out = subprocess.run(["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def subset_render(path: Path) -> list[dict]:
    k = yaml.safe_load((path / "kustomization.yaml").read_text())
    objects: list[dict] = []
    for res in k.get("resources", []):
        target = path / res
        objects += subset_render(target) if target.is_dir() else [d for d in yaml.safe_load_all(target.read_text()) if d]
    for gen in k.get("configMapGenerator", []):
        data = {Path(f).name: (path / f).read_text() for f in gen["files"]}
        existing = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"].get("generator") == gen["name"]]
        if gen.get("behavior") == "replace":
            existing[0]["data"] = data
        else:
            objects.append({"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                            "metadata": {"name": gen["name"], "generator": gen["name"]}})
    for patch in k.get("patches", []):
        for p in (d for d in yaml.safe_load_all((path / patch["path"]).read_text()) if d):
            (target,) = [o for o in objects if (o["kind"], o["metadata"]["name"]) == (p["kind"], p["metadata"]["name"])]
            _merge(target, p)
    for image in k.get("images", []):
        for o in objects:
            for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if c["image"].split(":")[0] == image["name"]:
                    c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for label in k.get("labels", []):
        for o in objects:
            o["metadata"].setdefault("labels", {}).update(label["pairs"])
    if "namespace" in k:
        for o in objects:
            o["metadata"]["namespace"] = k["namespace"]
    return objects


def finish(objects: list[dict]) -> list[dict]:
    """Name generated ConfigMaps after their content, as kustomize does, and point users at them."""
    names = {}
    for o in objects:
        gen = o["metadata"].pop("generator", None)
        if gen:
            digest = hashlib.sha256(yaml.safe_dump(o["data"]).encode()).hexdigest()[:10]
            o["metadata"]["name"] = names[gen] = f"{gen}-{digest}"
    for o in objects:
        for v in o.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] in names:
                v["configMap"]["name"] = names[v["configMap"]["name"]]
    return objects


def _merge(into: dict, patch: dict) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, list) and isinstance(into.get(key), list) and all("name" in v for v in value):
            by_name = {item.get("name"): item for item in into[key]}
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item)
                else:
                    into[key].append(item)
        else:
            into[key] = value


def render(path: Path) -> list[dict]:
    return kubectl_render(path) or finish(subset_render(path))
