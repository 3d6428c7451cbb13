"""The `k2` command line."""
