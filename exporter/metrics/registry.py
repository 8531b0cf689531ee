"""The exporter's own CollectorRegistry, and the render cache keyed on what its output shows."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from exporter.collect import Snapshot
from exporter.metrics.collectors import RefusedConnections, ReloadStatus, SnapshotCollector
from exporter.metrics.exposition import Exposition

# The process_* figures (CPU, memory, descriptors) are read from /proc at most once per this
# many seconds: reading them costs more than serving cached bytes, and a scraper that comes
# more often than this gains nothing from fresher ones.
PROCESS_REFRESH = 1.0


class Metrics:
    """Everything /metrics shows: the snapshot, the refused-connections counter, the reload
    status and (unless disabled) the process_* and python_info metrics."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        *,
        version: str,
        exporter_metrics: bool = True,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self._clock = clock
        self._monotonic = monotonic
        self._exporter_metrics = exporter_metrics
        self.refused = RefusedConnections()
        self.reload_status = ReloadStatus(clock())
        self.registry = CollectorRegistry()
        self.registry.register(SnapshotCollector(snapshot, version, clock))
        self.registry.register(self.refused)
        self.registry.register(self.reload_status)
        if exporter_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self.exposition = Exposition(self.registry, self._state)

    def _state(self) -> tuple[object, ...]:
        """What the registry's output depends on; the cached bodies last while it is equal."""
        snapshot = self._snapshot()
        process = self._monotonic() // PROCESS_REFRESH if self._exporter_metrics else None
        return (
            snapshot,
            snapshot.is_stale(self._clock()),
            self.refused.value,
            self.reload_status.state,
            process,
        )
