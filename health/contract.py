"""Validation of loaded tables against the data contract (see `health.schema`).

Placeholder: the full implementation reports every problem at once.
"""
