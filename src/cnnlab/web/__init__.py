"""`cnnlab serve`: a local web explorer of trained networks (a Flask app and one plain page).

The page (``static/``: HTML, JavaScript and CSS, no build step) draws; the JSON
API (``app.py``, documented in docs/explorer.md) calls ``probe.py`` for
everything it shows; ``folder.py`` decides which files may be served.
"""

from .app import create_app
from .folder import ServedFolder
from .server import serve

__all__ = ["ServedFolder", "create_app", "serve"]
