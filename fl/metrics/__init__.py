"""Prometheus metrics: each player's exporter, the driver's training metrics, the monitoring stack's config."""
