"""The HTTP layer: an allowlisted, bounded HTTP/1.1 server that only serves.

server.py accepts and admits connections; connection.py serves each one, top to bottom;
parsing.py reads and parses request heads; routes.py says what each request gets; page.py
renders the landing page, with chart.py's chart of what history.py keeps; security/ reads the
web configuration file (TLS, headers, basic auth users) and checks passwords. The server knows
nothing of metrics: it is given what to serve (Routes) and what to call on a refusal.
"""

from exporter.web.listen import ListenError
from exporter.web.routes import Routes
from exporter.web.server import Server

__all__ = ["ListenError", "Routes", "Server"]
