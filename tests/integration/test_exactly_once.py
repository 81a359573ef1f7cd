"""Exactly once at impact, on a real broker: what impact would receive, counted at its FTP server.

Checkout re-sends a share of its orders (in the same open batch and after their file left), sends
some orders' items further apart than the time cuts, some as whole order events, and click ids
that begin with '-' or hold '_'; the worker is killed once right after a push was confirmed and
before its records were acked. Every order must be in exactly one file, whole, every cell as the
event carried it; every refused record on the audit topic with its reason and its order's file;
every file uploaded to the push connection once."""
from __future__ import annotations

import csv
import io
import signal
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from tests.support.harness import (WorkerProcess, committed_offsets, produce, read_csv_files, read_topic, wait_until,
                                   write_config)
from tests.support.servers import PASSWORD, USER, FtpServer

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc).replace(microsecond=0)
AT = (NOW - timedelta(minutes=5)).isoformat()
CUSTOMERS = 12


def ref(c: int) -> str:
    return ("-Qi_", "ab_cd-", "~x.", "Zz")[c % 4] + f"{c:02d}"


def line(order: str, c: int, n: int, **extra) -> dict:
    return {"order_id": order, "customer_id": f"C{c:02d}", "occurred_at": AT, "currency": "EUR",
            "amount": f"{n + 1}.50", "category": "Garden", "sku": f"-SKU_{order}.{n}", "quantity": 1, **extra}


def encode(event: dict) -> tuple[bytes, bytes]:
    return event["customer_id"].encode(), orjson.dumps(event)


def row(it: dict, c: int) -> tuple:
    return ("1000", "4321", it["occurred_at"], it["order_id"], ref(c), it["customer_id"], it["currency"],
            it["amount"], it["category"], it["sku"], str(it["quantity"]))


@pytest.fixture(scope="module")
def scenario(broker, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exactly-once")
    app_id = "eo"
    out, ftp_root = tmp / "out", tmp / "impact-ftp"
    with FtpServer(ftp_root) as ftp:
        cfg = write_config(
            tmp / "config.yaml", bootstrap=broker.bootstrap, app_id=app_id, out_dir=out, data_dir=tmp / "data",
            topics={"audit": f"{app_id}.audit"}, kafka={"instance_id": "eo-0"}, attribution={"grace_s": 3},
            batch={"max_rows": 8, "max_age_s": 1.5, "order_settle_s": 0.5, "order_wait_s": 30},
            connections=[{"name": "outbox", "method": "fsspec", "url": str(out)},
                         {"name": "impact ftp", "method": "ftp", "host": "127.0.0.1", "port": ftp.port,
                          "username": USER, "password": {"env": "IMREF_TEST_FTP_PASSWORD"}, "allow_plaintext": True,
                          "timeout_s": 5}])
        env = {"IMREF_TEST_FTP_PASSWORD": PASSWORD}
        worker = WorkerProcess(cfg, tmp / "worker.log", env={**env, "IMREF_FAULTS": "after_upload@2"}).start()
        worker.wait_ready()
        produce(broker.bootstrap, f"{app_id}.clicks", [encode(
            {"customer_id": f"C{c:02d}", "im_ref": ref(c), "occurred_at": (NOW - timedelta(hours=1)).isoformat()})
            for c in range(CUSTOMERS)])
        wait_until(lambda: sum(committed_offsets(broker.bootstrap, app_id, f"{app_id}.clicks").values()) >= CUSTOMERS,
                   90, "clicks consumed", worker)

        expected: dict[str, list[tuple]] = {}  # order -> its rows, in the order checkout sent them
        refused: list[tuple[bytes, str, str]] = []  # (value, reason, order)

        def order(name: str, c: int, n: int, **extra) -> list[dict]:
            lines = [line(name, c, i, **extra) for i in range(n)]
            expected[name] = [row(it, c) for it in lines]
            return lines

        # 1. Orders filling two files; the worker dies right after the second file's push was
        #    confirmed, before its records were acked.
        first = [it for o in range(6) for it in order(f"A{o}", o, 1 + o % 3)]
        produce(broker.bootstrap, f"{app_id}.order-items", [encode(it) for it in first])
        assert worker.proc.wait(90) == -signal.SIGKILL, worker.log_text()[-3000:]
        before_kill = worker.log_text()

        worker = WorkerProcess(cfg, tmp / "worker.log", env=env).start()
        worker.wait_ready()
        # 2. Re-sends: a whole order right behind its original (same open batch), and orders
        #    whose file left already; one of them changed (a new line): not reported twice either.
        again = order("B0", 7, 2)
        produce(broker.bootstrap, f"{app_id}.order-items", [encode(it) for it in again + again])
        refused += [(orjson.dumps(it), "duplicate", "B0") for it in again]
        resent = [it for it in first if it["order_id"] in ("A1", "A4")]
        changed = line("A2", 2, 9)
        produce(broker.bootstrap, f"{app_id}.order-items", [encode(it) for it in resent + [changed]])
        refused += [(orjson.dumps(it), "duplicate", it["order_id"]) for it in resent]
        refused.append((orjson.dumps(changed), "order_already_reported", "A2"))
        # 3. Items further apart than the time cuts: with their count the order stays whole; without
        #    it the late item is refused, never put into a second file.
        counted = order("D0", 8, 3, items_in_order=3)
        loose = order("E0", 9, 1)
        late = line("E0", 9, 1)
        produce(broker.bootstrap, f"{app_id}.order-items", [encode(counted[0]), encode(loose[0])])
        time.sleep(4)  # longer than max_age_s + order_settle_s: a time cut comes in between
        produce(broker.bootstrap, f"{app_id}.order-items", [encode(counted[1]), encode(counted[2]), encode(late)])
        refused.append((orjson.dumps(late), "order_already_reported", "E0"))
        # 4. A whole order event, sent twice.
        head = {k: v for k, v in line("F0", 10, 0).items() if k not in ("amount", "category", "sku", "quantity")}
        lines = [{k: v for k, v in line("F0", 10, i).items() if k in ("amount", "category", "sku", "quantity")}
                 for i in range(3)]
        event = {**head, "items": lines}
        expected["F0"] = [row({**head, **it}, 10) for it in lines]
        produce(broker.bootstrap, f"{app_id}.order-items", [encode(event), encode(event)])
        refused.append((orjson.dumps(event), "duplicate", "F0"))

        rows = sum(len(r) for r in expected.values())
        wait_until(lambda: sum(len(f) - 1 for f in read_csv_files(out).values()) >= rows, 90, "every row in a file",
                   worker)
        audit = read_topic(broker.bootstrap, f"{app_id}.audit", expect=len(refused))
        wait_until(lambda: sum(committed_offsets(broker.bootstrap, app_id, f"{app_id}.order-items").values())
                   >= len(first) + 2 * len(again) + len(resent) + 1 + 5 + 2, 90, "every item committed", worker)
        assert worker.stop() == 0
        return dict(files=read_csv_files(out), raw={p.name: p.read_bytes() for p in out.glob("*.csv")},
                    pushed=list(ftp.received), ftp_files={p.name: p.read_bytes() for p in ftp_root.glob("*.csv")},
                    expected=expected, refused=refused, audit=audit, before_kill=before_kill, log=worker.log_text())


def test_every_order_is_in_exactly_one_file_whole_and_as_checkout_sent_it(scenario):
    where, got = defaultdict(set), defaultdict(list)
    for name, rows in scenario["files"].items():
        for r in rows[1:]:
            where[r[3]].add(name)
            got[r[3]].append(tuple(r))
    assert {o: len(f) for o, f in where.items() if len(f) != 1} == {}
    assert dict(got) == scenario["expected"]


def test_identifiers_reach_the_file_byte_for_byte(scenario):
    data = b"".join(scenario["raw"].values())
    for click_id in (b"-Qi_00", b"ab_cd-01", b"~x.02", b"-Qi_04"):
        assert b"," + click_id + b"," in data
    assert b",-SKU_A0.0," in data and b"'" not in data


def test_every_refused_record_is_on_the_audit_topic_with_its_reason_and_its_order_s_file(scenario):
    file_of = {r[3]: name for name, rows in scenario["files"].items() for r in rows[1:]}
    got = Counter((r.value, dict(r.headers)["imref.reason"].decode(), dict(r.headers)["imref.file"].decode())
                  for r in scenario["audit"])
    assert got == Counter((value, reason, file_of[order]) for value, reason, order in scenario["refused"])


def test_a_push_the_worker_saw_confirmed_is_never_uploaded_again(scenario):
    confirmed = [n for n in scenario["files"] if f"connection 'impact ftp' confirmed {n} (" in scenario["before_kill"]]
    assert confirmed, "the kill came before any confirmed push: nothing was tested"
    twice = [n for n, k in Counter(scenario["pushed"]).items() if k > 1]
    # A push still in flight when the worker died may have reached the server unconfirmed: that
    # one is sent again (impact's FTP has no way to ask); a confirmed one never.
    assert set(twice) & set(confirmed) == set()
    assert set(scenario["pushed"]) == set(scenario["files"])  # the push got every file the folder got
    assert scenario["ftp_files"] == scenario["raw"]
    assert "before (same content): not sent again" in scenario["log"]
