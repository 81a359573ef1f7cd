"""deploy/Dockerfile built and run (issue #26), the way a retailer's cluster runs it.

One build, on a bookworm base made here (no registry is reachable: tests/image/podman.py), then
one container: the image's own ENTRYPOINT, the StatefulSet's security settings, volumes and env
(tests/image/pod.py), against the embedded broker on the host over the host network. The checks
run in that container in order, each on what the previous left: the CLI and the installed modules
(`podman exec`), the worker ready under those settings, the probes, events produced here becoming
a file in a mounted folder, and the stop on SIGTERM within the grace period."""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
import yaml

from streams.tools.devbroker import create_topics, free_port
from tests.deploy.rules import one
from tests.deploy.tools import render
from tests.image.pod import env_args, grant_fs_group, security_args, volume_args, worker
from tests.image.podman import ROOT, Podman
from tests.support.harness import produce, read_csv_files

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]  # the first test also builds the image

CONTAINER, IMAGE = "imref-image-test-", "localhost/imref-stream:test-"  # + this run's pid
HEADER = ["CampaignId", "ActionTrackerId", "EventDate", "OrderId", "ClickId", "CustomerId",
          "CurrencyCode", "Amount", "Category", "Sku", "Quantity"]
OUTBOX = "/srv/outbox"  # stands in for a connection's remote folder
NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(scope="module")
def sts() -> dict:
    return one(render(ROOT / "deploy" / "base"), "StatefulSet")


@pytest.fixture(scope="module")
def podman() -> Podman:
    if os.geteuid() != 0:
        pytest.fail("the image test needs root: debootstrap and rootful podman (run `make test` as root)")
    podman = Podman.from_env()
    podman.remove_leftovers(CONTAINER, IMAGE)
    return podman


@pytest.fixture(scope="module")
def image(podman, tmp_path_factory):
    tag = f"{IMAGE}{os.getpid()}"
    podman.build(podman.local_base(), tag, tmp_path_factory.mktemp("build") / "build.log")
    yield tag
    podman("rmi", "-f", tag, check=False)  # on vfs it holds ~500 MB


class Container:
    def __init__(self, podman: Podman, name: str, log: Path, web_port: int, outbox: Path):
        self.podman, self.name, self.log, self.web_port, self.outbox = podman, name, log, web_port, outbox
        self.seen: dict | None = None  # what PROBE read inside
        self.rows: list | None = None  # the rows written before the stop

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def state(self) -> tuple[str, int]:
        out = self.podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.name).stdout.split()
        return out[0], int(out[1])

    def wait_for(self, what: str, condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            status, code = self.state()
            if status != "running":
                raise AssertionError(f"the container is {status} (exit {code}) while waiting for {what}:\n"
                                     f"{self.log_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {timeout}s:\n{self.log_text()[-4000:]}")
            time.sleep(0.5)

    def exec(self, *argv: str) -> str:
        done = self.podman("exec", self.name, *argv, check=False, timeout=60)
        shown = " ".join(a if len(a) < 40 else a[:40].strip() + "..." for a in argv)
        assert done.returncode == 0, (f"`{shown}` in the container failed ({done.returncode}):\n{done.stdout}"
                                      f"{done.stderr}\nworker log:\n{self.log_text()[-3000:]}")
        return done.stdout

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=5) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        except OSError:  # not listening yet
            return 0, {}
        try:
            return status, json.loads(body)
        except ValueError:
            return status, {"body": body.decode(errors="replace")}


def worker_config(bootstrap: str, web_port: int) -> dict:
    """The base's config.yaml (data_dir, store, stop bound, impact ids kept) pointed at the host's
    broker, a free web port on the shared host network, and a folder mounted from the host."""
    config = yaml.safe_load((ROOT / "deploy" / "base" / "config.yaml").read_text())
    config.update(
        kafka={"brokers": [f"kafka://{bootstrap}"], "session_timeout_s": 6, "heartbeat_interval_s": 1,
               "rebalance_timeout_s": 6},  # what Tansu needs to form a group in seconds
        topics={"clicks": "image.clicks", "order_items": "image.order-items", "unattributed": "image.unattributed",
                "dead_letter": "image.dead-letter", "partitions": 4, "replicas": 1},
        web={**config["web"], "port": web_port},
        attribution={"grace_s": 5},
        batch={**config["batch"], "max_age_s": 2, "file_title": "image-test"},
        connections=[{"name": "mounted folder", "method": "fsspec", "url": OUTBOX}],
    )
    return config


@pytest.fixture(scope="module")
def container(podman, image, sts, broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("container")
    config = worker_config(broker.bootstrap, free_port())
    topics = config["topics"]
    create_topics(broker.bootstrap, [topics["clicks"], topics["order_items"]], topics["partitions"])
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    sources = {"config": tmp / "config.yaml", "state": tmp / "state", "outbox": tmp / "outbox",
               "secrets": tmp / "secrets", "kafka-ca": tmp / "kafka-ca"}
    fs_group = worker(sts)[0]["securityContext"]["fsGroup"]
    for name in ("state", "outbox", "secrets", "kafka-ca"):
        sources[name].mkdir()
    for name in ("state", "outbox"):
        grant_fs_group(sources[name], fs_group)
    c = Container(podman, f"{CONTAINER}{os.getpid()}", tmp / "worker.log", config["web"]["port"],
                  sources["outbox"])
    podman("run", "-d", "--name", c.name, "--network", "host", *podman.ulimit_args(),
           "--log-driver", "k8s-file", "--log-opt", f"path={c.log}",
           *security_args(sts), *volume_args(sts, sources), "-v", f"{sources['outbox']}:{OUTBOX}:rw",
           *env_args(sts, f"{sts['metadata']['name']}-0"), image, timeout=300)
    yield c
    podman("rm", "-f", "--time", "0", c.name, check=False)


def test_the_cli_answers(container):
    out = container.exec("imref-stream", "--help")
    assert "usage: imref-stream" in out and "worker" in out


# The worker's own view of itself: PID 1 (what the kubelet signals), read from inside.
PROBE = """
import json, sys
import streams, faust, rocksdb
status = dict(line.split(":", 1) for line in open("/proc/1/status").read().splitlines())
root = next(line.split()[3] for line in open("/proc/1/mounts") if line.split()[1] == "/")
print(json.dumps({"python": sys.version_info[:2], "root": root.split(","),
                  "modules": [m.__file__ for m in (streams, faust, rocksdb)],
                  "cmdline": open("/proc/1/cmdline").read().rstrip("\\0").split("\\0"),
                  **{k: status[k].split() for k in ("Uid", "Gid", "Groups", "CapPrm", "CapEff", "CapBnd",
                                                    "NoNewPrivs", "Seccomp")}}))
"""


def test_the_modules_are_installed(container):
    seen = json.loads(container.exec("python", "-c", PROBE))
    assert seen["python"] == [3, 11]  # the locks hold cp311 wheels
    site = "/opt/imref/lib/python3.11/site-packages/"
    assert [m.startswith(site) for m in seen["modules"]] == [True] * 3, seen["modules"]
    container.seen = seen


def test_the_worker_runs_with_the_statefulsets_security_settings(container, podman, image, sts):
    seen = container.seen or json.loads(container.exec("python", "-c", PROBE))
    pod, worker_spec = worker(sts)
    sc = {**pod["securityContext"], **worker_spec["securityContext"]}
    uid, gid = str(sc["runAsUser"]), str(sc["runAsGroup"])
    assert uid != "0" and gid != "0"
    # the image's own user is the pod's, so `docker run` runs it as Kubernetes does
    assert podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip() == f"{uid}:{gid}"
    assert seen["cmdline"][1:] == ["/opt/imref/bin/imref-stream", "worker", "--config", "/etc/imref/config.yaml"], \
        "PID 1 must be the worker started by the image's ENTRYPOINT: SIGTERM goes to PID 1"
    assert seen["Uid"] == [uid] * 4 and seen["Gid"] == [gid] * 4
    assert str(pod["securityContext"]["fsGroup"]) in seen["Groups"]
    assert seen["CapPrm"] == seen["CapEff"] == seen["CapBnd"] == ["0000000000000000"]  # capabilities: drop ALL
    assert seen["NoNewPrivs"] == ["1"]  # allowPrivilegeEscalation: false
    assert seen["Seccomp"] == ["2"]  # a filter: RuntimeDefault
    assert "ro" in seen["root"]  # readOnlyRootFilesystem
    ready = worker_spec["readinessProbe"]["httpGet"]["path"]  # and it gets ready so
    container.wait_for(f"200 from {ready}", lambda: container.get(ready)[0] == 200, 120)


def test_the_probes_answer(container, sts):
    _, worker_spec = worker(sts)
    health, ready = worker_spec["livenessProbe"]["httpGet"]["path"], worker_spec["readinessProbe"]["httpGet"]["path"]
    assert worker_spec["startupProbe"]["httpGet"]["path"] == health
    container.wait_for(f"200 from {ready}", lambda: container.get(ready)[0] == 200, 60)
    _, body = container.get(ready)
    assert body["ok"] and all(check["ok"] for check in body["checks"].values()), body
    assert container.get(health) == (200, {"ok": True, "reasons": []})  # live: no stall, not stopping


def click(customer: str, ref: str) -> tuple[bytes, bytes]:
    return customer.encode(), orjson.dumps({"customer_id": customer, "im_ref": ref,
                                            "occurred_at": (NOW - timedelta(hours=1)).isoformat()})


def item(customer: str, order: str, n: int, **extra) -> dict:
    return {"order_id": order, "customer_id": customer, "occurred_at": (NOW - timedelta(minutes=5)).isoformat(),
            "currency": "EUR", "amount": f"{10 + n}.50", "category": "Garden", "sku": f"SKU-{order}-{n}",
            "quantity": 1 + n % 2, **extra}


def expected_rows() -> tuple[list, list, list[list[str]]]:
    clicks = [click(f"C{i:02d}", f"REF{i:02d}x") for i in range(6)]
    items = [(item(f"C{i:02d}", f"O{i:02d}", n), f"REF{i:02d}x") for i in range(6) for n in range(1 + i % 2)]
    items += [(item(f"K{i:02d}", f"OK{i:02d}", 0, im_ref=f"CK{i}"), f"CK{i}") for i in range(2)]  # from the cookie
    records = [(it["customer_id"].encode(), orjson.dumps(it)) for it, _ in items]
    rows = [["1000", "4321", it["occurred_at"], it["order_id"], ref, it["customer_id"], it["currency"],
             it["amount"], it["category"], it["sku"], str(it["quantity"])] for it, ref in items]
    return clicks, records, rows


def test_events_become_a_file_in_the_mounted_folder(container, broker):
    clicks, records, rows = expected_rows()
    produce(broker.bootstrap, "image.clicks", clicks)
    produce(broker.bootstrap, "image.order-items", records)

    def written() -> list[list[str]]:
        return [row for f in read_csv_files(container.outbox).values() for row in f[1:]]
    container.wait_for(f"{len(rows)} rows in {container.outbox}", lambda: len(written()) >= len(rows), 90)
    files = read_csv_files(container.outbox)
    assert all(f[0] == HEADER for f in files.values()), files
    assert sorted(written()) == sorted(rows)
    container.rows = sorted(rows)


def test_sigterm_stops_it_cleanly_within_the_grace_period(container, sts):
    grace = worker(sts)[0]["terminationGracePeriodSeconds"]
    started = time.monotonic()
    # what the kubelet does: SIGTERM to PID 1, SIGKILL once the grace period is over
    container.podman("stop", "--time", str(grace), container.name, timeout=grace + 60)
    took = time.monotonic() - started
    status, code = container.state()
    assert (status, code) == ("exited", 0), f"exit {code} after {took:.1f}s:\n{container.log_text()[-4000:]}"
    assert took < grace
    if container.rows is not None:  # the stop's flush adds no row twice
        assert sorted(row for f in read_csv_files(container.outbox).values() for row in f[1:]) == container.rows
