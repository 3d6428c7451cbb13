"""Query: DuckDB over the Iceberg tables, with file pruning planned by pyiceberg."""
