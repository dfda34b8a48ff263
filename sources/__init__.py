"""Adapters to the outside world: sources that read the canonical tables, and (later)
write-back sinks. Built-in adapters register themselves on import of `sources.registry`."""
