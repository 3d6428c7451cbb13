"""The lake: Iceberg catalog, table layout and the commit path that records landed Kafka offsets."""
