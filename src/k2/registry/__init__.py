"""Schema registries: the interface, the local file registry, the Confluent client, compatibility rules and the
Confluent-compatible REST facade over the local registry."""

from __future__ import annotations

from k2.registry.base import SchemaRegistry
from k2.registry.confluent import ConfluentSchemaRegistry
from k2.registry.local import LocalSchemaRegistry
from k2.settings import Settings


def registry_for(settings: Settings) -> SchemaRegistry:
    """The Confluent Schema Registry at K2_SCHEMA_REGISTRY_URL, else the local file registry in K2_HOME."""
    if settings.schema_registry_url:
        return ConfluentSchemaRegistry(settings.schema_registry_url)
    return LocalSchemaRegistry(settings.registry_dir)
