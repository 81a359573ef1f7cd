"""The chaos suite at full size; prints the result table for the README.

    python -m tests.chaos.run [--kills 50] [--cycles 4] [--regains 20] [--stops 5] [--poison-items 20000] [--outages 12]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

from streams.tools.devbroker import DevBroker

from . import scenarios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--cycles", type=int, default=4)
    p.add_argument("--regains", type=int, default=20)
    p.add_argument("--stops", type=int, default=5)
    p.add_argument("--poison-items", type=int, default=20_000)
    p.add_argument("--outages", type=int, default=12)
    args = p.parse_args()
    results, t0 = [], time.monotonic()
    with tempfile.TemporaryDirectory() as d, DevBroker(Path(d) / "broker.log") as broker:
        tmp = Path(d)
        for run in (lambda: scenarios.kill_sweep(broker, tmp, args.kills),
                    lambda: scenarios.rebalance(broker, tmp, args.cycles),
                    lambda: scenarios.regain_mid_upload(broker, tmp, args.regains),
                    lambda: scenarios.destination_faults(broker, tmp, args.outages),
                    lambda: scenarios.graceful_stop(broker, tmp, args.stops),
                    lambda: scenarios.poison(broker, tmp, args.poison_items),
                    # last: it also checks every log line the scenarios before it wrote
                    lambda: scenarios.security_negatives(broker, tmp)):
            results.append(run())
            print(results[-1], flush=True)
    print(f"\nChaos suite, {date.today()}, {platform.node()} ({platform.processor() or platform.machine()}), "
          f"{time.monotonic() - t0:.0f}s\n")
    print("| scenario | runs | rows expected | rows delivered | rows lost | rows in two files | notes |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.scenario} | {r.runs} | {r.expected} | {r.delivered} | {r.lost} | {r.duplicated} | {r.note} |")


if __name__ == "__main__":
    main()
