"""``imref-stream``: ``worker`` runs the pipeline; ``collector`` serves landing pages' click
beacons; ``demo`` runs it on an embedded broker; ``replay`` re-processes a time range into files."""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_settings


def run_worker(config: str, loglevel: str) -> int:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        print(f"imref-stream: {exc}", file=sys.stderr)
        return 2
    from .runtime.worker import run  # Faust is imported only by the worker

    return run(settings, loglevel)


def run_collector(config: str, loglevel: str) -> int:
    from .config import CollectorProcessSettings

    try:
        settings = load_settings(config, CollectorProcessSettings)
    except ConfigError as exc:
        print(f"imref-stream: {exc}", file=sys.stderr)
        return 2
    from .collector.server import run

    return run(settings, loglevel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imref-stream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run the pipeline against the configured Kafka cluster")
    w.add_argument("--config", required=True, help="YAML config file")
    w.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    c = sub.add_parser("collector", help="serve landing pages' click beacons (stateless; produces click events)")
    c.add_argument("--config", required=True, help="YAML config file (the worker's serves)")
    c.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    d = sub.add_parser("demo", help="run the pipeline on an embedded broker with generated traffic")
    d.add_argument("--output", default="demo-output", help="folder for the CSV files")
    d.add_argument("--orders", type=int, default=400, help="orders to generate")
    r = sub.add_parser("replay", help="re-process a time range of order items into files (backfill)")
    r.add_argument("--config", required=True, help="YAML config file")
    r.add_argument("--from", dest="start", required=True, help="ISO 8601 with zone: first record time")
    r.add_argument("--to", dest="end", required=True, help="ISO 8601 with zone: end of the range (excluded)")
    r.add_argument("--output", help="write the files into this folder instead of the connections")
    r.add_argument("--allow-duplicates", action="store_true",
                   help="also write files with rows the worker delivered in files whose cuts are no longer recorded")
    r.add_argument("--dry-run", action="store_true", help="write nothing; print each file and its row count")
    args = parser.parse_args(argv)
    if args.command == "worker":
        return run_worker(args.config, args.loglevel)
    if args.command == "collector":
        return run_collector(args.config, args.loglevel)
    if args.command == "replay":
        from .tools.replay import run

        return run(args.config, args.start, args.end, args.output, args.allow_duplicates, args.dry_run)
    from .tools.demo import run_demo

    return run_demo(args.output, args.orders)


if __name__ == "__main__":
    sys.exit(main())
