"""`k2 serve`: the REST API (FastAPI on uvicorn), loopback by default."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from k2.cli.common import HomeOption, settings_for
from k2.cli.output import console


def serve(
    home: HomeOption = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (env K2_API_HOST, default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env K2_API_PORT, default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (env K2_API_WORKERS).")] = None,
) -> None:
    """Serve the REST API: /v1 routes, /docs (OpenAPI), /health/live, /health/ready and /metrics."""
    import uvicorn

    overrides = {"api_host": host, "api_port": port, "api_workers": workers}
    settings = settings_for(home, **overrides)
    settings.existing_home()
    from k2.api.auth.guard import Guard

    if Guard(settings).enabled:  # refuses a configuration that would expose K2 unprotected, before binding
        console.print(f"authentication is on ({settings.api_host}): API keys "
                      f"{'and ' + settings.oidc_issuer + ' tokens ' if settings.oidc_issuer else ''}accepted; "
                      f"audit log {settings.audit_log}", highlight=False)
    # worker processes build their app from the environment: hand them these settings that way
    os.environ["K2_HOME"] = str(settings.home_path)
    for name, value in overrides.items():
        if value is not None:
            os.environ[f"K2_{name.upper()}"] = str(value)
    uvicorn.run("k2.api.app:app_from_environment", factory=True, host=settings.api_host, port=settings.api_port,
                workers=settings.api_workers, log_level="warning")
