"""The running exporter: a collection loop and an HTTP server built from one Config.

SIGHUP reloads: the configuration file and the credentials are read and validated again, and a
valid result replaces the running configuration as a whole (listen addresses, allowlist,
statuses, interval, database). An invalid one is refused as a whole, with the same messages as
--config.check, and the running configuration carries on. The snapshot being served is kept
throughout, until the first collection with the new settings replaces it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from socket import socket

from exporter import __version__, systemd
from exporter import log as logs
from exporter.collect import CollectionLoop
from exporter.config import Config, ConfigError, Overrides, load
from exporter.metrics.registry import Metrics
from exporter.sources.source import Source
from exporter.web import ListenError, Routes, Server
from exporter.web.history import History


def make_source(config: Config, demo_path: Path | None, logger: logs.Logger) -> Source:
    """The configured source; nothing connects until the first collection."""
    db, timeout = config.database, config.collection.timeout
    if db.driver == "sqlite":
        from exporter.sources.sqlite import SQLiteSource  # noqa: PLC0415 - only the demo and sqlite need it

        return SQLiteSource(demo_path or Path(db.path), config.tasks, timeout=timeout)
    from exporter.sources.mysql import MySQLSource  # noqa: PLC0415 - pymysql only when MySQL is used

    return MySQLSource(
        db,
        config.tasks,
        timeout=timeout,
        scan_warning_rows=config.collection.scan_warning_rows,
        logger=logger,
    )


class Service:
    """Everything that runs while the exporter serves, and the one way to change it: reload()."""

    def __init__(
        self,
        config: Config,
        *,
        config_file: Path | None,
        overrides: Overrides,
        demo_path: Path | None,
        logger: logs.Logger,
        environ: MutableMapping[str, str] = os.environ,
        clock: Callable[[], float] = time.time,
        exporter_metrics: bool = True,
    ) -> None:
        self.config = config
        self._config_file = config_file
        self._overrides = overrides
        self._demo_path = demo_path
        self._environ = environ
        self._clock = clock
        self.log = logger
        self.history = History()  # the landing page's chart, fed by each collection
        self.collection = CollectionLoop(
            make_source(config, demo_path, logger),
            config.tasks,
            config.collection,
            logger=logger,
            on_collected=self.history.record,
        )
        self.metrics = Metrics(
            lambda: self.collection.snapshot,
            version=__version__,
            exporter_metrics=exporter_metrics,
            clock=clock,
        )
        self._reloading = asyncio.Lock()
        self._reloads: set[asyncio.Task[bool]] = set()  # in flight, referenced until done
        self.server = Server(
            routes=self._routes(config),
            web=config.web,
            on_refused=self.metrics.refused.inc,
            logger=logger,
        )

    def _routes(self, config: Config) -> Routes:
        return Routes(
            metrics=self.metrics.exposition,
            snapshot=lambda: self.collection.snapshot,
            telemetry_path=config.web.telemetry_path,
            version=__version__,
            source=config.database.describe(),
            history=self.history.points,
        )

    async def run(self) -> bool:
        """Serve until SIGTERM or SIGINT; False when it could not start listening."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        async with self._reloading:  # a SIGHUP during start is applied once it has started
            try:
                await self.server.start(self._passed_sockets())
            except (ListenError, systemd.SystemdError) as exc:
                self.log.error("cannot start", err=str(exc))  # noqa: TRY400 - one clear line, no traceback
                return False
            self.log.info("tasks_exporter started", **self._summary(self.config))
            # The port is bound (or passed by systemd) but nothing is accepted until the first
            # collection has ended: the first scrape, which may be the one that started the
            # service, sees fresh counts rather than up 0. Clients wait in the listen queue.
            self.collection.start()
            await self._first_collection(self.config.collection.timeout)
            await self.server.serve()
        systemd.notify("READY=1", self._environ)
        await stop.wait()
        systemd.notify("STOPPING=1", self._environ)
        self.log.info("shutting down")
        await self.server.stop()
        self.collection.stop()
        return True

    async def _first_collection(self, limit: float) -> None:
        """Return once the first collection has ended, successful or not, or after `limit`
        seconds (a database that does not answer is reported by that collection, later)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if any(n for _, n in self.collection.snapshot.outcomes):
                return
            await asyncio.sleep(0.005)

    def _passed_sockets(self) -> Iterable[socket]:
        if not self.config.web.systemd_socket:
            return ()
        return systemd.listen_sockets(self._environ, os.getpid())

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> bool:
        """Read the configuration again; apply it whole, or refuse it whole and keep running."""
        async with self._reloading:  # one at a time: each reads the file as it is when it runs
            systemd.notify("RELOADING=1", self._environ)
            try:
                applied = await self._reload()
            finally:
                systemd.notify("READY=1", self._environ)
            self.metrics.reload_status.record(applied, self._clock())
            return applied

    async def _reload(self) -> bool:
        try:
            config = load(self._config_file, self._overrides, self._environ)
        except ConfigError as exc:
            self._refused(exc.problems)
            return False
        if config.web.systemd_socket != self.config.web.systemd_socket:
            self._refused(
                ["web.systemd_socket: cannot change on reload; restart the service to change it"]
            )
            return False
        try:
            await self.server.reconfigure(config.web, self._routes(config))
        except ListenError as exc:
            self._refused([str(exc)])
            return False
        self.collection.reconfigure(
            make_source(config, self._demo_path, self.log), config.tasks, config.collection
        )
        self.log = logs.setup(config.log.level, config.log.format)
        self.config = config
        self.log.info("configuration reloaded", **self._summary(config))
        return True

    def _refused(self, problems: Iterable[str]) -> None:
        for problem in problems:
            self.log.error(
                "configuration reload refused; the running configuration is kept",
                err=f"config error: {problem}",
            )

    def _summary(self, config: Config) -> dict[str, object]:
        listen = ",".join(self.server.describe_listeners())
        return {
            "version": __version__,
            "listen": f"systemd:{listen}" if config.web.systemd_socket else listen,
            "allow": ",".join(str(n) for n in config.web.allow),
            "source": config.database.describe(),
            "interval_seconds": config.collection.interval,
            **self._security_summary(),
        }

    def _security_summary(self) -> dict[str, object]:
        security = self.server.security()
        return {"web_config": "none"} if security is None else security.describe()
