"""Opening a page in real headless Chromium (Debian's package): its DOM and a screenshot."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")

# Nothing but the page: no first-run, sync, update or background traffic, and every host name
# unresolvable, so the browser can reach 127.0.0.1 (where the tests serve) and nothing else.
_FLAGS = (
    "--headless",
    "--no-sandbox",  # the suite may run as root, where the sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


@dataclass(frozen=True)
class Capture:
    dom: str  # the document as the browser holds it once loaded (after any script would have run)
    screenshot: Path
    size: tuple[int, int]  # the screenshot's width and height, read from its PNG header


def _binary() -> str:
    if CHROMIUM.exists():
        return str(CHROMIUM)
    found = shutil.which("chromium")
    if found is None:
        raise RuntimeError(
            f"{CHROMIUM} not found: install the Debian package chromium "
            "(scripts/dev test installs it when run as root)"
        )
    return found


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise AssertionError(f"{path} is not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def capture(
    url: str,
    workdir: Path,
    *,
    name: str,
    window: tuple[int, int] = (1000, 900),
    timeout: float = 60,
) -> Capture:
    """Load `url` once: return the DOM after load and save a screenshot as workdir/NAME.png."""
    png = workdir / f"{name}.png"
    argv = [
        _binary(),
        *_FLAGS,
        f"--user-data-dir={workdir / 'chromium-profile'}",
        f"--window-size={window[0]},{window[1]}",
        f"--screenshot={png}",
        "--dump-dom",
        url,
    ]
    # Its own process group, so that on a timeout the browser's helpers go with it.
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"chromium did not finish loading {url} within {timeout}s") from None
    if proc.returncode != 0 or not png.exists() or b"<html" not in out:
        tail = "\n".join(err.decode(errors="replace").splitlines()[-20:])
        raise AssertionError(f"chromium failed on {url} (exit {proc.returncode}):\n{tail}")
    return Capture(dom=out.decode("utf-8"), screenshot=png, size=png_size(png))


def _paeth(left: int, up: int, corner: int) -> int:
    p = left + up - corner
    pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
    return left if pa <= pb and pa <= pc else up if pb <= pc else corner


def _unfilter(kind: int, line: bytearray, previous: bytearray, size: int) -> bytearray:
    """Undo one scanline's PNG filter, in place."""
    if kind == 0:
        return line
    for i in range(len(line)):
        left = line[i - size] if i >= size else 0
        if kind == 1:
            predictor = left
        elif kind == 2:
            predictor = previous[i]
        elif kind == 3:
            predictor = (left + previous[i]) // 2
        else:
            predictor = _paeth(left, previous[i], previous[i - size] if i >= size else 0)
        line[i] = (line[i] + predictor) & 0xFF
    return line


def png_pixels(path: Path) -> list[list[tuple[int, int, int]]]:
    """The RGB rows of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    data = path.read_bytes()
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour not in (2, 6) or interlace:
        raise AssertionError(f"{path}: PNG kind not read here ({depth=}, {colour=})")
    size = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * size + 1
    rows, previous = [], bytearray(stride - 1)
    for y in range(height):
        line = bytearray(raw[y * stride + 1 : (y + 1) * stride])
        previous = _unfilter(raw[y * stride], line, previous, size)
        rows.append([tuple(previous[x * size : x * size + 3]) for x in range(width)])
    return rows  # type: ignore[return-value]
