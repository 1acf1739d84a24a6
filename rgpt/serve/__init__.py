"""Serving: the MLflow model flavour, the registry and promotion, the HTTP gateway and backends."""
