"""`k2 apikey create|list|revoke`: the REST API's keys (hashed at rest; a key is shown once, when created)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

import typer

from k2.cli.common import FormatOption, HomeOption, settings_for
from k2.cli.output import OutputFormat, console, render
from k2.errors import InputError

app = typer.Typer(help="Manage the REST API's keys (docs/security.md).", no_args_is_help=True)

_DURATION = re.compile(r"^(\d+)([hdw])$")


def _expiry(text: str | None) -> dt.datetime | None:
    if text is None or text == "never":
        return None
    found = _DURATION.match(text)
    if not found:
        raise InputError(f"--expires {text!r}: give a duration like 12h, 90d or 52w, or `never`")
    amount, unit = int(found.group(1)), found.group(2)
    hours = amount * {"h": 1, "d": 24, "w": 24 * 7}[unit]
    return dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)


@app.command("create")
def create(
    owner: Annotated[str, typer.Option(help="Who the key is for (a person, a desk, a service).")],
    role: Annotated[list[str], typer.Option(help="A role it holds (repeat for several); see docs/security.md.")],
    expires: Annotated[str | None, typer.Option(help="Lifetime: 12h, 90d, 52w, or never.")] = "90d",
    home: HomeOption = None,
) -> None:
    """Create a key and print it once: it cannot be shown again (only its hash is kept)."""
    from k2.api.auth.keys import KeyStore
    from k2.api.auth.roles import load_roles

    settings = settings_for(home)
    known = load_roles(settings.api_roles_file)
    unknown = [r for r in role if r not in known]
    if unknown:
        raise InputError(f"unknown role(s) {', '.join(unknown)}: the roles are {', '.join(sorted(known))}")
    key, record = KeyStore(settings.keys_db).create(owner, tuple(role), _expiry(expires))
    until = record.expires_at.isoformat(timespec="minutes") if record.expires_at else "never"
    console.print(f"key {record.key_id} for {owner} (roles {', '.join(record.roles)}; expires {until}):",
                  highlight=False)
    typer.echo(key)
    console.print("store it now: it is not shown again", highlight=False)


@app.command("list")
def list_keys(home: HomeOption = None, fmt: FormatOption = OutputFormat.TABLE) -> None:
    """Every key: id, owner, roles, created, expires, revoked (never the key itself)."""
    import pyarrow as pa

    from k2.api.auth.keys import KeyStore

    settings = settings_for(home)
    keys = KeyStore(settings.keys_db).list()
    rows = [{"key_id": k.key_id, "owner": k.owner, "roles": ",".join(k.roles),
             "created": k.created_at.isoformat(timespec="seconds"),
             "expires": k.expires_at.isoformat(timespec="seconds") if k.expires_at else "never",
             "revoked": k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else ""} for k in keys]
    names = ["key_id", "owner", "roles", "created", "expires", "revoked"]
    render(pa.Table.from_pylist(rows, schema=pa.schema([(n, pa.string()) for n in names])), fmt, "API keys")


@app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (k2 apikey list).")],
           home: HomeOption = None) -> None:
    """Revoke a key: every `k2 serve` worker refuses it within seconds."""
    from k2.api.auth.keys import KeyStore

    if not KeyStore(settings_for(home).keys_db).revoke(key_id):
        raise InputError(f"no active key {key_id!r} (k2 apikey list shows them)")
    console.print(f"key {key_id} revoked", highlight=False)
