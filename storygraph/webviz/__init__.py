"""The live story viewer: a Flask app (graph, panels, Cypher console, editing and generating) and its server.

``create_app(store, engine=None, ...)`` builds the app; ``serve(app, host, port, allow_remote=False)``
runs it until interrupted; ``start(...)`` runs it in a background thread. Nothing here imports torch.

Modules: ``app`` (the factory), ``viewer`` (what the blueprints share), the blueprints ``api``, ``pages`` and
``stream``, and their helpers ``graph`` (Cytoscape elements), ``events`` (the SSE hub), ``worker`` (the one
generation thread), ``security`` and ``server``.
"""

from __future__ import annotations

from .app import create_app
from .server import RemoteBindRefused, RunningServer, make_server, serve, start, viewer_url
from .viewer import ViewerConfig, viewer_of

__all__ = ["create_app", "serve", "start", "make_server", "RunningServer", "RemoteBindRefused", "ViewerConfig",
           "viewer_of", "viewer_url"]
