"""K2's REST API (FastAPI, `k2 serve`): versioned routes over the same query and replay engines as the CLI."""
