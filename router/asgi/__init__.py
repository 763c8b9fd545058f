"""Plain ASGI layers around the app: request context and access log, fast lanes that call the routes' own functions."""
