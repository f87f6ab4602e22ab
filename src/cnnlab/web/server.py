"""Running the explorer: a threaded local HTTP server, on 127.0.0.1 unless asked otherwise."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from ..errors import CnnlabError
from .app import LOOPBACK_NAMES, create_app
from .folder import ServedFolder


class _Handler(WSGIRequestHandler):
    """A request handler that gives up on a client silent for ``timeout`` seconds, so clients
    that send half a request cannot hold the server's threads."""

    timeout = 15


def start(folder: ServedFolder, host: str = "127.0.0.1", port: int = 8000) -> BaseWSGIServer:
    """A server for ``folder``'s explorer, bound but not yet serving (port 0: any free port).

    The socket is bound here rather than by werkzeug, which would print and exit
    on a busy port instead of raising.
    """
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    with listener:  # the server works on its own duplicate of the socket
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
        except (OSError, OverflowError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise CnnlabError(f"cannot listen on {host}:{port}: {reason}") from None
        listener.listen()
        # on a loopback address only loopback names are answered; elsewhere the user chose who
        hosts = LOOPBACK_NAMES if host in LOOPBACK_NAMES else None
        app = create_app(folder, hosts=hosts)
        return make_server(
            host, port, app, threaded=True, fd=listener.fileno(), request_handler=_Handler
        )


def serve(
    target: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    log: Callable[[str], None] = print,
) -> None:
    """Serve the checkpoints and runs of ``target`` (a checkpoint file or a folder) until Ctrl-C."""
    folder = ServedFolder.open(target)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = start(folder, host, port)
    count = len(folder.checkpoints())
    address = f"[{host}]" if ":" in host else host
    log(
        f"cnnlab explorer: http://{address}:{server.port}/  ({count} checkpoint"
        f"{'s' if count != 1 else ''} in {folder.root}; Ctrl-C stops it)"
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        log(f"note: listening on {host}: anyone who can reach this machine can use the explorer")
    server.serve_forever()  # werkzeug's returns on Ctrl-C, with the socket closed
    log("stopped")
