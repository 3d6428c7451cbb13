"""What the lake holds: symbols, reference data and corporate actions, snapshots (time travel), data quality."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from k2.api import deps, formats, models
from k2.api.errors import ApiError
from k2.api.routes.ticks import Symbols
from k2.query.engine import COUNTS_SCHEMA, QUALITY_VIEW_SCHEMA, SNAPSHOTS_SCHEMA, QueryEngine
from k2.schemas import Dataset, arrow_schema

router = APIRouter(tags=["lake"], responses={**models.ERROR_RESPONSES, **formats.table_responses()})
Engine = Annotated[QueryEngine, Depends(deps.engine)]


@router.get("/symbols", response_model=models.page_model("SymbolCounts", COUNTS_SCHEMA))
def symbols(request: Request, engine: Engine, symbols: Symbols = None) -> Any:
    """Every symbol with trades: its exchange, trade count and first/last trade time."""
    return formats.answer(request, engine.counts(deps.symbol_list(symbols)))


@router.get("/reference", response_model=models.page_model("Instrument", arrow_schema(Dataset.REFERENCE)))
def reference(request: Request, engine: Engine, symbols: Symbols = None) -> Any:
    """Instrument reference data (every version, `valid_from` order)."""
    return formats.answer(request, engine.reference(Dataset.REFERENCE, deps.symbol_list(symbols)))


@router.get("/corporate-actions",
            response_model=models.page_model("CorporateAction", arrow_schema(Dataset.CORPORATE_ACTIONS)))
def corporate_actions(request: Request, engine: Engine, symbols: Symbols = None) -> Any:
    """Dividends, splits and mergers (`ex_date` order)."""
    return formats.answer(request, engine.reference(Dataset.CORPORATE_ACTIONS, deps.symbol_list(symbols)))


@router.get("/snapshots", response_model=models.page_model("Snapshot", SNAPSHOTS_SCHEMA))
def snapshots(request: Request, engine: Engine,
              dataset: Literal["trades", "quotes", "reference", "corporate_actions"] = "trades") -> Any:
    """The table's history, newest first: ids for `snapshot_id`, commit times for `as_of`, and the Kafka offsets
    each snapshot had landed up to."""
    return formats.answer(request, engine.snapshots(Dataset(dataset)))


@router.get("/quality", response_model=models.page_model("QualityDay", QUALITY_VIEW_SCHEMA))
def quality(request: Request, engine: Engine, symbols: Symbols = None) -> Any:
    """Per dataset, symbol and day: received, landed, duplicates dropped, late rows, sequence gaps."""
    return formats.answer(request, engine.quality(deps.symbol_list(symbols)))


class TagRequest(BaseModel):
    dataset: Literal["trades", "quotes", "reference", "corporate_actions"] = "trades"
    snapshot_id: int
    name: str = Field(min_length=1, max_length=100, description="Letters, digits, '.', '_' or '-'.")


class Tagged(BaseModel):
    dataset: str
    snapshot_id: int
    name: str


@router.post("/snapshots/tags", response_model=Tagged, status_code=201, responses={409: {
    "model": models.ErrorBody, "description": "The table already has a tag or branch of that name."}})
def tag(request: Request, body: TagRequest) -> Tagged:
    """Admin: tag a snapshot so that it is kept (expiry keeps tagged snapshots) and stays answerable by
    `snapshot_id`, e.g. what the lake held at a day's close. A tag is never moved: a name in use is a 409."""
    from k2.lake.catalog import load_table, open_catalog
    from k2.lake.snapshots import tag_snapshot

    settings = deps.settings(request)
    table = load_table(open_catalog(settings), settings, Dataset(body.dataset))
    if table is None:
        raise ApiError(404, "snapshot_not_found", f"there is no {body.dataset} table yet")
    tag_snapshot(table, body.snapshot_id, body.name)  # the engine sees it at its next look at the catalog
    return Tagged(dataset=body.dataset, snapshot_id=body.snapshot_id, name=body.name)
