"""Command line: flags and file -> Config -> source -> collection loop -> metrics -> HTTP.

Read top to bottom, this is the whole data flow of the exporter: config.py, sources/,
collect.py, metrics/ and web/, put together by service.py while it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

from prometheus_client.registry import CollectorRegistry

from exporter import __version__, hardening
from exporter import log as logs
from exporter.collect import CollectionLoop
from exporter.config import Config, ConfigError, Overrides, load
from exporter.metrics.collectors import SnapshotCollector
from exporter.metrics.exposition import Exposition
from exporter.service import Service, make_source

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tasks_exporter",
        description="Prometheus exporter: task counts per status from a MySQL/MariaDB table.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        type=Path,
        metavar="PATH",
        help="TOML configuration file",
    )
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration and credentials files, then exit",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="run one collection, print the metrics and exit (non-zero on failure)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve an embedded SQLite demo database instead of a configured one",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        action="append",
        default=[],
        metavar="ADDR",
        help="address to listen on, repeatable (default :9775)",
    )
    parser.add_argument(
        "--web.systemd-socket",
        dest="systemd_socket",
        action="store_true",
        help="serve the listening sockets systemd passes (socket activation) instead of"
        " --web.listen-address",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        metavar="PATH",
        help="path of the metrics (default /metrics)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="exporter-toolkit web configuration (YAML): TLS, headers, basic auth users",
    )
    parser.add_argument(
        "--web.max-requests",
        dest="max_requests",
        type=int,
        metavar="N",
        help="metrics requests answered at once; more get a 503 (default 40, 0: no limit)",
    )
    parser.add_argument(
        "--web.disable-exporter-metrics",
        dest="disable_exporter_metrics",
        action="store_true",
        help="leave out the process_* and python_info metrics about the exporter itself",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        metavar="LEVEL",
        help="debug, info, warn or error (default info)",
    )
    parser.add_argument(
        "--log.format", dest="log_format", metavar="FORMAT", help="logfmt or json (default logfmt)"
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.version:
        print(f"tasks_exporter, version {__version__} (python {platform.python_version()})")
        return EXIT_OK
    # Before anything reads the password: a core dump of this process would hold it.
    hardening.keep_out_of_core_dumps()
    overrides = Overrides(
        listen_addresses=tuple(args.listen),
        telemetry_path=args.telemetry_path,
        web_config_file=args.web_config_file,
        max_requests=args.max_requests,
        log_level=args.log_level,
        log_format=args.log_format,
        demo=args.demo,
        systemd_socket=args.systemd_socket,
    )
    try:
        config = load(args.config_file, overrides, os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"tasks_exporter: config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args.config_check:
        print(f"tasks_exporter: configuration is valid ({config.database.describe()})")
        return EXIT_OK
    logger = logs.setup(config.log.level, config.log.format)
    hardening.raise_open_files_limit()
    with contextlib.ExitStack() as stack:
        demo_path = None
        if config.database.demo:
            from exporter.sources.demo import DemoDatabase  # noqa: PLC0415 - sqlite3 only for the demo

            demo_path = stack.enter_context(DemoDatabase(progress=not args.once)).path
        if args.once:
            source = make_source(config, demo_path, logger)
            try:
                return once(CollectionLoop(source, config.tasks, config.collection, logger=logger))
            finally:
                source.close()
        return serve(config, args, overrides, demo_path, logger)


def once(collection: CollectionLoop) -> int:
    """The installer's check: one collection, its metrics on stdout, the reason on failure."""
    snapshot = collection.collect_once()
    if not snapshot.up:
        print(f"tasks_exporter: collection failed: {snapshot.error}", file=sys.stderr)
        return EXIT_FAILURE
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snapshot, __version__))
    text, _, _ = Exposition(registry, state=lambda: snapshot).render(None, None)
    sys.stdout.write(text.decode("utf-8"))
    return EXIT_OK


def serve(
    config: Config,
    args: argparse.Namespace,
    overrides: Overrides,
    demo_path: Path | None,
    logger: logs.Logger,
) -> int:
    async def run() -> bool:
        service = Service(
            config,
            config_file=args.config_file,
            overrides=overrides,
            demo_path=demo_path,
            logger=logger,
            exporter_metrics=not args.disable_exporter_metrics,
        )
        return await service.run()

    return EXIT_OK if asyncio.run(run()) else EXIT_FAILURE


def run() -> None:
    sys.exit(main())
