"""``melo serve``: an HTTP service answering completions and taking edits, durable across crashes."""

from .app import create_app, serve
from .service import EditService, Limits

__all__ = ["EditService", "Limits", "create_app", "serve"]
