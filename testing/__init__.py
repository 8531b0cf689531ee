"""The test harness: a private MariaDB, the exporter as a process, Prometheus, Chromium, and the
load and fault tools, for tests/ and bench/ (not part of the installed package)."""
