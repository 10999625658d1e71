"""``codi2 serve``: an HTTP API (OpenAI-style chat with media) and a web chat page.

Embedding the server in Python::

    import codi2
    from codi2.server import ServerSettings, create_app, run_server

    model = codi2.load()                               # or codi2.load("runs/my-model")
    app = create_app(model, settings=ServerSettings(max_queue=8))   # a FastAPI app
    run_server(model, ServerSettings(port=8000))      # or: uvicorn with the app above

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart). Importing this package stays
light (no FastAPI, no torch) until :func:`create_app` or :func:`run_server` runs. See
``docs/serving.md`` for the API and the limits.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from codi2.errors import Codi2Error
from codi2.server.settings import ServerSettings


def require_server_dependencies() -> None:
    """Raise a one-line error naming the extra when FastAPI, uvicorn or python-multipart is missing."""
    import importlib.util

    missing = [name for name, module in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"),
                                         ("python-multipart", "python_multipart"))
               if importlib.util.find_spec(module) is None]  # fmt: skip
    if missing:
        raise Codi2Error(f"codi2 serve needs {', '.join(missing)}: pip install 'codi2[serve]'")


def create_app(model: Any = None, **kwargs: Any) -> Any:
    """The FastAPI application; see :func:`codi2.server.app.create_app`."""
    require_server_dependencies()
    from codi2.server.app import create_app as _create_app

    return _create_app(model, **kwargs)


def _bind(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts, so a port in use is a plain OSError (one line in the CLI)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def run_server(model: Any, settings: ServerSettings | None = None, *, quiet: bool = False) -> int:
    """Serve ``model`` until interrupted (Ctrl-C or SIGTERM); returns the exit status."""
    require_server_dependencies()
    import uvicorn

    from codi2.server.shutdown import DrainingServer, graceful_timeout

    settings = (settings or ServerSettings()).validate()
    app = create_app(model, settings=settings)
    sock = _bind(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(app, log_level="warning" if quiet else "info", access_log=not quiet,
                            timeout_graceful_shutdown=graceful_timeout(settings))  # fmt: skip

    print(f"codi2: serving {getattr(model, 'source_name', 'the model')} on http://{shown}:{port} "
          f"(web chat: http://{shown}:{port}/ , API: http://{shown}:{port}/docs)", flush=True)  # fmt: skip
    try:
        DrainingServer(config, app, quiet=quiet).run(sockets=[sock])
    finally:
        sock.close()
    engine = app.state.engine
    print(f"codi2: server stopped ({engine.served} answered)", file=sys.stderr, flush=True)
    return 0


__all__ = ["ServerSettings", "create_app", "require_server_dependencies", "run_server"]
