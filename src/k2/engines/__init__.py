"""Distributed engines on K2's own tables, for when one machine is not enough: Trino and Spark read (and write)
the same Iceberg catalog and warehouse K2 lands into. Their servers come from Maven Central, fetched explicitly."""
