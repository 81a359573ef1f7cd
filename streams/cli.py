"""``imref-stream``: ``worker`` runs the pipeline; ``collector`` serves landing pages' click beacons;
``check`` tests a config against Kafka and every connection; ``demo`` runs it all on an embedded
broker; ``dev-broker`` and ``produce`` try your own config locally; ``replay`` re-processes a time
range into files."""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

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


def package_version() -> str:
    try:
        return version("imref-stream")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imref-stream", description=__doc__)
    p.add_argument("--version", action="version", version=f"imref-stream {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run the pipeline against the configured Kafka cluster")
    w.add_argument("--config", required=True, help="YAML config file")
    w.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    col = sub.add_parser("collector", help="serve landing pages' click beacons (stateless; produces click events)")
    col.add_argument("--config", required=True, help="YAML config file (the worker's serves)")
    col.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    c = sub.add_parser("check", help="test a config: Kafka, topics, consumer group and every connection")
    c.add_argument("--config", required=True, help="YAML config file")
    d = sub.add_parser("demo", help="run the pipeline on an embedded broker with generated traffic")
    d.add_argument("--output", default="demo-output", help="folder for the CSV files")
    d.add_argument("--orders", type=int, default=400, help="orders to generate")
    b = sub.add_parser("dev-broker", help="start the embedded Kafka-protocol broker and leave it running")
    b.add_argument("--port", type=int, help="port on 127.0.0.1 (default: the config's localhost port, else 9092)")
    b.add_argument("--config", help="YAML config file: create its input topics with topics.partitions")
    b.add_argument("--log", default="dev-broker.log", help="the broker's log file")
    pr = sub.add_parser("produce", help="send clicks, order items or order changes to the configured topics")
    pr.add_argument("--config", required=True, help="YAML config file (kafka and topics are used)")
    what = pr.add_subparsers(dest="what", required=True)
    pc = what.add_parser("click", help="one click")
    pc.add_argument("customer_id")
    pc.add_argument("im_ref")
    pc.add_argument("--at", help="occurred_at, ISO 8601 with zone (default: now)")
    pc.add_argument("--landing-url")
    po = what.add_parser("order", help="one order: an event per --item")
    po.add_argument("order_id")
    po.add_argument("customer_id")
    po.add_argument("--currency", default="USD")
    po.add_argument("--item", action="append", required=True, metavar="sku=S,category=C,amount=A,quantity=Q")
    po.add_argument("--im-ref", help="the ClickId checkout already has (from the cookie)")
    po.add_argument("--at", help="occurred_at, ISO 8601 with zone (default: now)")
    pf = what.add_parser("file", help="JSON lines, one event a line ('-': standard input)")
    pf.add_argument("path")
    r = sub.add_parser("replay", help="re-process a time range of order items into files (backfill)")
    r.add_argument("--config", required=True, help="YAML config file")
    r.add_argument("--from", dest="start", required=True, help="ISO 8601 with zone: first record time")
    r.add_argument("--to", dest="end", required=True, help="ISO 8601 with zone: end of the range (excluded)")
    r.add_argument("--output", help="write the files into this folder instead of the connections")
    r.add_argument("--allow-duplicates", action="store_true",
                   help="also write files with rows the worker delivered in files whose cuts are no longer recorded")
    r.add_argument("--dry-run", action="store_true", help="write nothing; print each file and its row count")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "worker":
        return run_worker(args.config, args.loglevel)
    if args.command == "collector":
        return run_collector(args.config, args.loglevel)
    if args.command == "check":
        from .tools.check import run

        return run(args.config)
    if args.command == "replay":
        from .tools.replay import run

        return run(args.config, args.start, args.end, args.output, args.allow_duplicates, args.dry_run)
    if args.command == "dev-broker":
        from .tools.dev import run_dev_broker

        return run_dev_broker(args.port, args.config, args.log)
    if args.command == "produce":
        return _produce(args)
    from .tools.demo import run_demo

    return run_demo(args.output, args.orders)


def _produce(args) -> int:
    from .tools import dev
    from .tools.producer import now_iso

    if args.what == "file":
        return dev.run_produce(args.config, dev.events_from_file(args.path))
    if args.what == "click":
        click = {"customer_id": args.customer_id, "im_ref": args.im_ref, "occurred_at": args.at or now_iso(),
                 **({"landing_url": args.landing_url} if args.landing_url else {})}
        return dev.run_produce(args.config, lambda settings: [click])
    return dev.run_produce(args.config, lambda settings: dev.order_events(
        args.order_id, args.customer_id, args.currency, args.item, args.at, args.im_ref))


if __name__ == "__main__":
    sys.exit(main())
