"""Roles and entitlements: which datasets, and optionally which symbols, a caller may read (market-data licences).

Roles come from a TOML file (`K2_API_ROLES_FILE`) or the built-in set:

    [roles.asx-equities]
    datasets = ["trades", "quotes"]
    symbols = ["BHP", "CBA", "W*"]     # fnmatch patterns; absent = every symbol
    metrics = false                    # may scrape /metrics and read the pipeline view (lag, dead letters)
    admin = false                      # may change the lake: tag snapshots (the console's admin actions)

A request outside a caller's entitlements is refused (403) with the missing entitlement named; results are never
filtered to fit, so an answer is always the whole answer.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from k2.errors import InputError

DATASETS = ("trades", "quotes", "reference", "quality")


@dataclass(frozen=True)
class Role:
    name: str
    datasets: frozenset[str]
    symbols: tuple[str, ...] = ()  # fnmatch patterns; empty: every symbol
    metrics: bool = False
    admin: bool = False


BUILT_IN: dict[str, Role] = {
    "reader": Role("reader", frozenset(DATASETS), metrics=True),
    "trades-reader": Role("trades-reader", frozenset({"trades", "reference"})),
    "quotes-reader": Role("quotes-reader", frozenset({"quotes", "reference"})),
    "metrics": Role("metrics", frozenset(), metrics=True),
    "admin": Role("admin", frozenset(DATASETS), metrics=True, admin=True),
}


@dataclass(frozen=True)
class Denial:
    """Why a request is refused: the entitlement it lacks, said so that the caller knows what to ask for."""

    missing: str
    message: str


@dataclass(frozen=True)
class Entitlements:
    """What a caller's roles grant together."""

    roles: tuple[Role, ...] = field(default_factory=tuple)
    unrestricted: bool = False  # auth is off: everything

    def names(self) -> str:
        return ", ".join(r.name for r in self.roles) or "none"

    def may_scrape_metrics(self) -> Denial | None:
        if self.unrestricted or any(r.metrics for r in self.roles):
            return None
        return Denial("metrics", "metrics and the pipeline view need a role with `metrics = true`; the caller's "
                      f"roles: {self.names()}")

    def may_administer(self) -> Denial | None:
        if self.unrestricted or any(r.admin for r in self.roles):
            return None
        return Denial("admin", f"this is an admin action: it needs a role with `admin = true` (the built-in "
                      f"`admin`); the caller's roles: {self.names()}")

    def check(self, datasets: Iterable[str], symbols: list[str] | None) -> Denial | None:
        """None when every dataset may be read for `symbols` (None: every symbol)."""
        if self.unrestricted:
            return None
        for dataset in datasets:
            granting = [r for r in self.roles if dataset in r.datasets]
            if not granting:
                return Denial(f"dataset:{dataset}", f"this caller may not read {dataset}: none of its roles "
                              f"({self.names()}) grants it")
            if any(not r.symbols for r in granting):
                continue
            patterns = sorted({p for r in granting for p in r.symbols})
            if symbols is None:
                return Denial(f"symbols:{dataset}", f"this caller may read {dataset} only for symbols matching "
                              f"{', '.join(patterns)}: name the symbols (`symbols=`)")
            outside = [s for s in symbols if not any(fnmatch.fnmatchcase(s, p) for p in patterns)]
            if outside:
                return Denial(f"symbols:{dataset}", f"this caller may not read {dataset} for {', '.join(outside)}: "
                              f"its roles grant only symbols matching {', '.join(patterns)}")
        return None


def load_roles(path: Path | None) -> dict[str, Role]:
    """The roles of `path` (TOML), or the built-in ones."""
    if path is None:
        return dict(BUILT_IN)
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"cannot read the roles file {path}: {exc}") from None
    return {name: _role(name, spec, path) for name, spec in document.get("roles", {}).items()}


def _role(name: str, spec: Mapping[str, object], path: Path) -> Role:
    datasets = spec.get("datasets", [])
    symbols = spec.get("symbols", [])
    if not isinstance(datasets, list) or not set(datasets) <= set(DATASETS):
        raise InputError(f"{path}: role {name!r}: datasets must be a list of {', '.join(DATASETS)}")
    if not isinstance(symbols, list) or not all(isinstance(s, str) and s for s in symbols):
        raise InputError(f"{path}: role {name!r}: symbols must be a list of symbol patterns")
    return Role(name, frozenset(datasets), tuple(symbols), bool(spec.get("metrics", False)),
                bool(spec.get("admin", False)))


def entitlements(roles: Mapping[str, Role], names: Iterable[str]) -> Entitlements:
    """The caller's entitlements from its role names (names K2 does not know grant nothing)."""
    return Entitlements(tuple(roles[n] for n in dict.fromkeys(names) if n in roles))
