"""/metrics, with prometheus_client as the engine.

`collectors` turns the current snapshot and the exporter's own counters into fresh metric
families; `registry` puts them, with prometheus_client's ProcessCollector and PlatformCollector,
in the exporter's own CollectorRegistry; `exposition` negotiates the format, renders and
compresses, and keeps the bytes until something they show changes.
"""
