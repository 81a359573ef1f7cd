"""The chaos suite at full size on each local broker; prints the result table for the README.

    python -m tests.chaos.run [--brokers noida,tansu] [--kills 50] [--cycles 4] [--regains 20] [--stops 5]
                              [--poison-items 20000] [--outages 12] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
import traceback
from datetime import date
from pathlib import Path

from streams.tools.devbroker import BROKER_ENV, KINDS, DevBroker, broker_kind

from . import scenarios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", default=",".join(KINDS), help="comma-separated: the brokers to run on, in turn")
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--cycles", type=int, default=4)
    p.add_argument("--regains", type=int, default=20)
    p.add_argument("--stops", type=int, default=5)
    p.add_argument("--poison-items", type=int, default=20_000)
    p.add_argument("--outages", type=int, default=12)
    p.add_argument("--keep", help="copy each scenario's folder (logs, files) here after it ran")
    args = p.parse_args()
    rows, t0 = [], time.monotonic()
    for kind in (broker_kind(name) for name in args.brokers.split(",")):
        # The test workers read the broker from here: the Tansu shim (tests/support/tansu_compat.py)
        # applies only when it names Tansu, whose ListOffsets answers short.
        os.environ[BROKER_ENV] = kind.name
        with tempfile.TemporaryDirectory() as d, DevBroker(Path(d) / "broker.log", kind=kind.name) as broker:
            tmp = Path(d)
            for name, run in (("kill sweep", lambda: scenarios.kill_sweep(broker, tmp, args.kills)),
                              ("rebalance", lambda: rebalance(broker, tmp, args.cycles)),
                              ("regain", lambda: scenarios.regain_mid_upload(broker, tmp, args.regains)),
                              ("destination faults", lambda: scenarios.destination_faults(broker, tmp, args.outages)),
                              ("graceful stop", lambda: scenarios.graceful_stop(broker, tmp, args.stops)),
                              ("poison", lambda: scenarios.poison(broker, tmp, args.poison_items)),
                              # last: it also checks every log line the scenarios before it wrote
                              ("security negatives", lambda: scenarios.security_negatives(broker, tmp))):
                try:
                    rows.append((kind, run()))
                except Exception as exc:  # a failed scenario is a row of the table; the others still run
                    traceback.print_exc()
                    rows.append((kind, scenarios.Result(name, 0, 0, 0, 0, 0, note=f"FAILED: {str(exc)[:300]}")))
                print(kind.name, rows[-1][1], flush=True)
                if args.keep:
                    shutil.copytree(tmp, Path(args.keep) / kind.name / name.replace(" ", "-"), dirs_exist_ok=True)
    print(f"\nChaos suite, {date.today()}, {platform.node()} ({platform.processor() or platform.machine()}), "
          f"{time.monotonic() - t0:.0f}s\n")
    print("| broker | scenario | runs | rows expected | rows delivered | rows lost | rows in two files | notes |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, r in rows:
        print(f"| {kind.title} | {r.scenario} | {r.runs} | {r.expected} | {r.delivered} | {r.lost} | {r.duplicated} "
              f"| {r.note} |")


def rebalance(broker: DevBroker, tmp: Path, cycles: int) -> scenarios.Result:
    needs, why = scenarios.REBALANCE_NEEDS
    if getattr(broker.kind, needs):
        return scenarios.rebalance(broker, tmp, cycles)
    return scenarios.Result("second worker joins and leaves under load", 0, 0, 0, 0, 0, note=f"not run: {why}")

if __name__ == "__main__":
    main()
