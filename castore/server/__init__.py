"""The HTTP server: the Filetracker v2 protocol over a castore store (Starlette on uvicorn/gunicorn).

What lives where in this package (``docs/design.md``, "Map of the code"):

* :mod:`.app` — ``create_app`` (the ASGI app for one store: routes, middlewares, lifespan)
  and ``app_from_environment`` (what each worker runs);
* :mod:`.config` — ``ServerConfig``, the one configuration ``castore serve`` hands its workers;
* :mod:`.handlers` (the endpoints), :mod:`.statuses` (errors become statuses there, but for
  :mod:`.auth`'s, :mod:`.ui`'s and ``/health``'s own answers),
  :mod:`.streaming` (ranges and verified bodies), :mod:`.middleware` (the ASGI wrappers);
* :mod:`.upload`, :mod:`.batch`, :mod:`.conditional`, :mod:`.hosts`, :mod:`.auth`, :mod:`.tokens`,
  :mod:`.metrics` — request bodies and their bounds, ``PUT /batch/``'s work, conditional requests, the ``Host``
  check, access tokens, Prometheus counters;
* :mod:`.serving` (with ``serve``), :mod:`.listening`, :mod:`.httptools`, :mod:`.tls` — the process model
  (gunicorn with uvicorn workers), the listening socket, the HTTP parser's limits, HTTPS's certificate;
* :mod:`.ui` and ``templates/`` — the read-only web page.

The names below are imported on first use (PEP 562), so importing a module of this package
(say :mod:`.hosts`, which the command line checks its options with) does not load Starlette.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_members

_LAZY = {"app_from_environment": "app", "create_app": "app", "early_answers": "app", "serve": "serving",
         "ServerConfig": "config",
         "batch_limits": "handlers", "version_answer": "handlers"}

__getattr__, __dir__ = lazy_members(globals(), _LAZY)

if TYPE_CHECKING:
    from .app import app_from_environment, create_app, early_answers
    from .config import ServerConfig
    from .handlers import batch_limits, version_answer
    from .serving import serve

__all__ = ["ServerConfig", "app_from_environment", "batch_limits", "create_app", "early_answers", "serve", "version_answer"]
