"""K2: a market data lakehouse — ticks land through Kafka into Iceberg and come back out through DuckDB."""

__version__ = "0.1.0"
