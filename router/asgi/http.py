"""Small helpers for the plain ASGI middlewares (no Starlette request objects on their hot paths)."""

from __future__ import annotations


def header(scope, name: bytes) -> str | None:
    """The first value of a request header; `name` in lower case, as ASGI gives them."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def send_json(send, body: bytes, status: int = 200) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    """Raised by `RequestContext`'s receive once a body passes the limit; it answers 413."""
