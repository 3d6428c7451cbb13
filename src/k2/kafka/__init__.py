"""Kafka: client configuration, topics, the producer, dead letters, and the local broker K2 manages."""
