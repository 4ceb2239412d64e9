"""Prometheus metrics (``observability.metrics``) and log formatting (``observability.logging``) of a consumer."""
