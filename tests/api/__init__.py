"""The HTTP API, its production surface and access log."""
