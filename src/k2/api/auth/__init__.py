"""Authentication (API keys, OIDC tokens), entitlements and the audit log of the REST API."""
