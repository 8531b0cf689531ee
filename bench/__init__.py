"""The benchmark suite of tasks_exporter: `scripts/dev bench` (see bench/README.md)."""
