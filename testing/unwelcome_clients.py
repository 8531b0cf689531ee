"""Unwelcome clients for the load tests, in a process of their own (so not sharing the test's GIL).

    python testing/unwelcome_clients.py PORT --idle N --trickle N --kept N \
        --flood-from ADDRESS --rate N

Opens N silent connections, N that trickle a never-ending request a byte at a time (one byte
per connection every 0.1 s), and N kept-alive ones idle after one answered request, all from
127.0.0.1; prints "ready", then connects from ADDRESS (a refused one) up to --rate times a
second, each connection sending a request, until stdin closes. Then prints one JSON line:
how many flood connections were made, and how many of the held connections the server closed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import struct
import sys
import threading
import time

_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def _closed_by_server(s: socket.socket) -> bool:
    s.setblocking(False)  # noqa: FBT003 - the socket API
    try:
        while s.recv(1 << 16):
            pass  # something unread: read on
    except BlockingIOError:
        return False  # open, nothing (more) to read
    except OSError:
        return True  # reset
    return True  # end of stream


def _trickle(sockets: list[socket.socket], stop: threading.Event) -> None:
    for s in sockets:
        s.sendall(b"GET /metrics HTTP/1.1\r\nX-Trickle: ")
    while not stop.wait(0.1):
        for s in sockets:
            with contextlib.suppress(OSError):  # counted as closed at the end
                s.send(b"a")


def _flood(port: int, source: str, rate: float, stop: threading.Event, made: list[int]) -> None:
    # SO_LINGER 0: close with a reset, so thousands of connections leave no TIME_WAIT behind.
    linger = struct.pack("ii", 1, 0)
    next_at = time.monotonic()
    while not stop.is_set():
        next_at += 1 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
        try:
            s = _connect(port, source)
        except OSError:
            continue
        made[0] += 1
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        with contextlib.suppress(OSError):  # the server may have reset it already
            s.sendall(_REQUEST)
        s.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--idle", type=int, default=0)
    parser.add_argument("--trickle", type=int, default=0)
    parser.add_argument("--kept", type=int, default=0)
    parser.add_argument("--flood-from", default="127.0.0.2")
    parser.add_argument("--rate", type=float, default=1000)
    args = parser.parse_args()

    idle = [_connect(args.port) for _ in range(args.idle)]
    trickling = [_connect(args.port) for _ in range(args.trickle)]
    kept = [_connect(args.port) for _ in range(args.kept)]
    for s in kept:
        s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"Healthy.\n"):
            answer += s.recv(1 << 16)
    stop = threading.Event()
    made = [0]
    threads = [
        threading.Thread(target=_trickle, args=(trickling, stop)),
        threading.Thread(target=_flood, args=(args.port, args.flood_from, args.rate, stop, made)),
    ]
    for t in threads:
        t.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes stdin
    stop.set()
    for t in threads:
        t.join()
    closed = {
        name: sum(_closed_by_server(s) for s in group)
        for name, group in (("idle", idle), ("trickle", trickling), ("kept", kept))
    }
    print(json.dumps({"flood": made[0], "closed": closed}), flush=True)


if __name__ == "__main__":
    main()
