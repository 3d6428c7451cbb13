"""Ingestion: sources (CSV, generator) → Avro on Kafka → consumer that lands batches in the lake."""
