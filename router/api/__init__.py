"""HTTP: routes, request and answer schemas, auth, the one mapping from domain errors to status codes."""
