"""The ad-hoc SQL escape hatch: one read-only SELECT over named views of the current tables.

Three walls, each enough on its own for what it guards:
1. the text must parse as exactly one SELECT (DuckDB's own parser decides, not a regular expression);
2. its syntax tree may name only K2's views (and its own CTEs), and no table function (read_csv, glob, ...);
3. it runs on a fresh DuckDB connection whose file access is limited to the tables' data files, with the
   configuration locked, so that even a missed case cannot read or write anything else.
A row cap and a time limit (the query is interrupted) bound what one call can cost.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from k2.errors import QueryError
from k2.query.duck import quiet
from k2.query.objectstore import attach_object_store
from k2.schemas import Dataset, arrow_schema
from k2.settings import Settings

VIEWS = {
    "trades": Dataset.TRADES, "quotes": Dataset.QUOTES, "reference": Dataset.REFERENCE,
    "corporate_actions": Dataset.CORPORATE_ACTIONS,
}
_DENIED_FUNCTIONS = {"getenv", "read_text", "read_blob", "current_setting", "query", "query_table"}


@dataclass(frozen=True)
class SqlResult:
    table: pa.Table
    truncated: bool  # more rows matched than the cap allowed


def check_sql(text: str) -> None:
    """QueryError unless `text` is a single SELECT over K2's views without table functions."""
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as exc:
        raise QueryError(f"the SQL does not parse: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise QueryError(f"give exactly one SELECT statement (got {len(statements)})")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise QueryError(f"only SELECT is allowed here (got {statements[0].type.name}); the lake is read-only")
    tree = json.loads(duckdb.execute("SELECT json_serialize_sql(?)", [text]).fetchone()[0])  # type: ignore[index]
    if tree.get("error"):
        raise QueryError(f"the SQL cannot be checked: {tree.get('error_message')}")
    ctes = {name.lower() for name in _cte_names(tree)}
    for node in _nodes(tree):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            raise QueryError("table functions (read_csv, read_parquet, glob, …) are not allowed; query the views "
                             f"{', '.join(VIEWS)}")
        if kind == "BASE_TABLE":
            name = str(node.get("table_name", "")).lower()
            if node.get("schema_name") or node.get("catalog_name") or (name not in VIEWS and name not in ctes):
                raise QueryError(f"unknown table {node.get('table_name')!r}; the views are {', '.join(VIEWS)}")
        if node.get("class") == "FUNCTION" and str(node.get("function_name", "")).lower() in _DENIED_FUNCTIONS:
            raise QueryError(f"the function {node.get('function_name')}() is not allowed here")


def run_sql(text: str, files: dict[Dataset, list[str]], max_rows: int, timeout_seconds: float,
            settings: Settings | None = None) -> SqlResult:
    """Check, then run `text` with a view per dataset over `files` (local paths, or s3:// ones readable with the
    settings' keys), at most `max_rows` rows."""
    check_sql(text)
    allowed = [path for paths in files.values() for path in paths]
    con = quiet(duckdb.connect())
    try:
        con.execute("SET TimeZone = 'UTC'")
        if settings is not None:
            attach_object_store(con, settings)
        con.execute(f"SET allowed_paths = {_literal_list(allowed)}")
        for view, dataset in VIEWS.items():
            paths = files.get(dataset, [])
            if paths:  # views cannot hold parameters: K2's own paths, quoted
                con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({_literal_list(paths)}, "
                            "union_by_name = true)")
            else:
                con.register(f"_{view}_empty", arrow_schema(dataset).empty_table())
                con.execute(f"CREATE VIEW {view} AS SELECT * FROM _{view}_empty")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return _fetch(con, text, max_rows, timeout_seconds)
    finally:
        con.close()


def _fetch(con: duckdb.DuckDBPyConnection, text: str, max_rows: int, timeout_seconds: float) -> SqlResult:
    timer = threading.Timer(timeout_seconds, con.interrupt)
    timer.start()
    try:
        reader = con.execute(text).to_arrow_reader(batch_size=min(max_rows + 1, 100_000))
        batches, rows = [], 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows > max_rows:
                break
    except duckdb.InterruptException:
        raise QueryError(f"the query ran longer than {timeout_seconds:g}s and was stopped "
                         "(K2_QUERY_SQL_TIMEOUT_SECONDS)") from None
    except duckdb.Error as exc:
        raise QueryError(f"the query failed: {str(exc).splitlines()[0]}") from None
    finally:
        timer.cancel()
    table = pa.Table.from_batches(batches, schema=reader.schema)
    return SqlResult(table.slice(0, max_rows), truncated=rows > max_rows)


def _literal_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _nodes(tree: object) -> Iterator[dict[str, object]]:
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _cte_names(tree: object) -> Iterator[str]:
    for node in _nodes(tree):
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map", []):
                yield str(entry.get("key", ""))
