"""The floor: a bare standard-library HTTP/1.1 keep-alive server answering constant bytes.

    python bench/floor.py DIR

serves each file DIR/NAME (a whole response, head and body) at /NAME, to every request, and
prints the port it listens on (127.0.0.1, chosen by the system). It is what the exporter is
measured against: http.server's ThreadingHTTPServer, one thread per connection, with each
response written in one go (headers and body in separate writes would meet Nagle's algorithm
and delayed ACKs, about 40 ms a request, and make a meaningless floor).
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def main(directory: Path) -> None:
    responses = {f"/{p.name}": p.read_bytes() for p in directory.iterdir()}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_GET(self) -> None:
            self.wfile.write(responses.get(self.path, NOT_FOUND))

        def log_message(self, *_args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 512

        def handle_error(self, *_args: object) -> None:
            pass  # a load generator closing its connections is not worth a traceback

    with Server(("127.0.0.1", 0), Handler) as server:
        print(server.server_address[1], flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
