"""DuckDB reading an s3:// warehouse: the httpfs extension from its PyPI wheel (DuckDB's own download is not
reachable on locked-down machines) and one S3 secret from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from k2.errors import ConfigError

if TYPE_CHECKING:
    import duckdb

    from k2.settings import Settings


def uses_object_store(settings: Settings) -> bool:
    """Whether the lake may live in S3 (a REST catalog names its own warehouse, often s3://)."""
    return bool(settings.s3_endpoint or settings.s3_access_key_id or settings.catalog_type == "rest"
                or (settings.warehouse or "").startswith(("s3://", "s3a://")))


def attach_object_store(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Let `con` read s3:// paths with the settings' endpoint and keys (nothing to do for a local lake)."""
    if not uses_object_store(settings):
        return
    con.execute(f"LOAD {_literal(_httpfs_path())}")
    options = {"TYPE": "s3", "REGION": _literal(settings.s3_region)}
    if settings.s3_access_key_id:
        options["KEY_ID"] = _literal(settings.s3_access_key_id)
        options["SECRET"] = _literal(settings.s3_secret_access_key or "")
    if settings.s3_endpoint:
        scheme, _, host = settings.s3_endpoint.rpartition("://")
        options.update(ENDPOINT=_literal(host.rstrip("/")), URL_STYLE="'path'",
                       USE_SSL="false" if scheme == "http" else "true")
    body = ", ".join(f"{key} {value}" for key, value in options.items())
    con.execute(f"CREATE OR REPLACE SECRET k2_s3 ({body})")


def _httpfs_path() -> str:
    try:
        import duckdb_extension_httpfs
    except ImportError:
        raise ConfigError("an s3:// lake needs DuckDB's httpfs extension: pip install 'k2[production]' "
                          "(the duckdb-extension-httpfs wheel)") from None
    from pathlib import Path

    import duckdb

    found = Path(duckdb_extension_httpfs.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    return str(found / "httpfs.duckdb_extension")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
