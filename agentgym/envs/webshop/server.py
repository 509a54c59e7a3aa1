"""One shop server per process: the Flask app on 127.0.0.1 at a free port, in a background thread.

Every WebShop env of the process shares it (each with its own sessions); ``acquire`` starts it with
the first env and ``release`` stops it with the last.
"""

from __future__ import annotations

import os
import threading

from werkzeug.serving import WSGIRequestHandler, make_server

from agentgym.envs.webshop.app import Shop, ShopApp
from agentgym.envs.webshop.data import Catalogue


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # one line per page view is noise here
        pass


class ShopServer:
    _instance: ShopServer | None = None
    _users = 0
    _lock = threading.Lock()
    _shops: dict[str, Shop] = {}  # search indexes outlive a server restart: they are costly to build

    def __init__(self) -> None:
        self.app = ShopApp()
        self._http = make_server("127.0.0.1", 0, self.app.flask, threaded=True, request_handler=_QuietHandler)
        self.port = self._http.server_port
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._http.serve_forever, name="webshop-server", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls) -> ShopServer:
        """The process's server, started if this is its first user."""
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            cls._users += 1
            return cls._instance

    @classmethod
    def release(cls) -> None:
        """One user fewer; the last one stops the server."""
        with cls._lock:
            cls._users = max(0, cls._users - 1)
            if cls._users == 0 and cls._instance is not None:
                cls._instance._http.shutdown()
                cls._instance._http.server_close()
                cls._instance = None

    def shop(self, catalogue: Catalogue) -> Shop:
        """The shop (catalogue + search index) for ``catalogue``, built once per process."""
        with self._lock:
            if catalogue.name not in self._shops:
                self._shops[catalogue.name] = Shop.from_catalogue(catalogue)
            return self._shops[catalogue.name]


def _forget_after_fork() -> None:
    # a forked child has none of the parent's threads: it starts its own server when it needs one
    ShopServer._instance, ShopServer._users = None, 0
    ShopServer._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
