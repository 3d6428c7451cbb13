"""Observability: Prometheus metrics shared by every K2 process."""
