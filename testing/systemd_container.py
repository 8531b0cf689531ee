"""A Debian 12 container booted with systemd as PID 1, for the tests that need a real systemd.

The root file system is built once with debootstrap from the Debian archive apt already uses,
cached under the user's cache directory keyed by its suite and package list, and built in a
temporary directory renamed into place only when complete: an interrupted build never leaves a
cache that looks whole. Each boot runs on a throwaway overlay (`--volatile=overlay`), so the
cache stays pristine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
VARIANT = "minbase"
# What the production section (docs/operations.md) needs on the exporter host, plus the database
# it talks to. procps comes with mariadb-server; the test removes /usr/bin/kill from its overlay
# to show the unit does not need it.
PACKAGES = (
    "systemd",
    "dbus",
    "python3",
    "python3-venv",
    "mariadb-server",
    "curl",
    "openssl",
    "iproute2",
)
DEFAULT_MIRROR = "http://deb.debian.org/debian"
COMPLETE = ".tasks_exporter-rootfs"  # written last inside the tree, before the rename


def unavailable() -> str | None:
    """Why a container cannot be booted here, or None when it can."""
    if os.geteuid() != 0:
        return "booting a systemd container needs root"
    for tool, package in (
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("unshare", "util-linux"),
    ):
        if shutil.which(tool) is None:
            return f"booting a systemd container needs {tool} (Debian package {package})"
    return None


def cache_key(suite: str = SUITE, packages: Sequence[str] = PACKAGES) -> str:
    """A short stable hash of what goes into the root file system."""
    recipe = json.dumps({"suite": suite, "variant": VARIANT, "packages": sorted(packages)})
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tasks_exporter" / "rootfs"


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine's apt uses (deb822 or one-line sources), else the CDN."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        with contextlib.suppress(OSError):
            text = path.read_text(encoding="utf-8")
            for stanza in re.split(r"\n\s*\n", text):
                uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
                suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
                if uris and suites and SUITE in suites.group(1).split():
                    return uris.group(1)
            for line in text.splitlines():
                words = line.split()
                if words[:1] == ["deb"] and len(words) >= 3:
                    rest = [w for w in words[1:] if not w.startswith("[")]
                    if len(rest) >= 2 and rest[1] == SUITE:
                        return rest[0]
    return DEFAULT_MIRROR


@dataclass(frozen=True)
class RootFS:
    path: Path
    built_seconds: float | None  # None when it came from the cache


def root_filesystem(suite: str = SUITE, packages: Sequence[str] = PACKAGES) -> RootFS:
    """The cached root file system, built first if it is not there yet."""
    parent = cache_dir()
    parent.mkdir(parents=True, exist_ok=True)
    final = parent / f"{suite}-{cache_key(suite, packages)}"
    if (final / COMPLETE).exists():
        return RootFS(final, None)
    with (parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others wait and reuse it
        if (final / COMPLETE).exists():
            return RootFS(final, None)
        for stale in parent.glob(".build-*"):  # left by an interrupted build
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=parent))
        try:
            _debootstrap(build / "root", suite, packages)
            (build / "root" / COMPLETE).write_text(
                json.dumps({"suite": suite, "packages": list(packages)}) + "\n", encoding="utf-8"
            )
            (build / "root").rename(final)
        finally:
            shutil.rmtree(build, ignore_errors=True)
        return RootFS(final, time.monotonic() - started)


def _debootstrap(target: Path, suite: str, packages: Sequence[str]) -> None:
    """debootstrap in two stages, with a policy-rc.d between them so that no package starts a
    daemon in the build (mariadb-server would), all in a private mount namespace so that the
    /proc and /sys the second stage mounts go away with it, even when interrupted."""
    policy = target / "usr" / "sbin" / "policy-rc.d"
    script = f"""
        set -eu
        debootstrap --variant={VARIANT} --include={",".join(packages)} --foreign \
            {suite} {target} {apt_mirror()}
        printf '#!/bin/sh\\nexit 101\\n' > {policy}
        chmod 0755 {policy}
        chroot {target} /debootstrap/debootstrap --second-stage
        rm -f {policy}
        rm -rf {target}/var/cache/apt/archives/*.deb {target}/var/lib/apt/lists/*_Packages
    """
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if result.returncode != 0:
        log = target / "debootstrap" / "debootstrap.log"
        detail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(
            f"debootstrap failed ({result.returncode}):\n{result.stderr[-3000:]}\n{detail}"
        )


PATH_IN_CONTAINER = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Container:
    """systemd-nspawn booting `root` with systemd as PID 1, on a private veth link to the host.

    What these machines need (issue 11): `--register=no --keep-unit` (no systemd-machined
    here), a private tmpfs on /run/systemd (under `unshare -m`, so the host's is untouched),
    and `--system-call-filter=bpf`, without which systemd inside cannot attach the programs of
    IPAddressAllow= and silently does not enforce it.
    """

    def __init__(self, root: Path, workdir: Path, *, binds: dict[Path, str]) -> None:
        self.root = root
        self.name = f"tx{os.urandom(3).hex()}"  # ve-NAME fits the 15 characters of a link name
        subnet = int.from_bytes(os.urandom(2), "big") & 0x3FFF  # a random /30 in 10.213/16
        self.host_address = f"10.213.{subnet >> 6}.{(subnet & 0x3F) * 4 + 1}"
        self.address = f"10.213.{subnet >> 6}.{(subnet & 0x3F) * 4 + 2}"
        self.log_path = workdir / f"{self.name}.console.log"
        self.binds = binds
        self.process: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self.boot_seconds = 0.0

    def start(self, *, timeout: float = 60) -> float:
        """Boot, wait until systemd says the system is up, set up the link; seconds it took."""
        started = time.monotonic()
        nspawn = [
            "systemd-nspawn",
            "--quiet",
            "--boot",
            "--register=no",
            "--keep-unit",
            f"--directory={self.root}",
            "--volatile=overlay",
            f"--machine={self.name}",
            "--network-veth",
            "--system-call-filter=bpf",
            "--console=pipe",
            *(f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()),
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    'mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd && exec "$@"',
                    "sh",
                    *nspawn,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.leader:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the container did not start:\n{self.console()}")
            self.leader = self._find_leader()
            time.sleep(0.05)
        # Until systemd has its private socket systemctl says "offline", or nothing ("Failed to
        # connect to bus"); then --wait waits for the boot to end.
        while True:
            result = self.run(
                ["timeout", str(int(timeout)), "systemctl", "is-system-running", "--wait"]
            )
            state = result.stdout.strip()
            if state not in ("", "offline") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if state not in ("running", "degraded"):
            raise RuntimeError(
                f"the container's systemd is {state!r} ({result.stderr.strip()}):\n"
                + self.console()
            )
        self._link()
        self.boot_seconds = time.monotonic() - started
        return self.boot_seconds

    def _find_leader(self) -> int:
        """The container's PID 1, seen from here: a descendant of nspawn whose PID is 1 in its
        own namespace."""
        assert self.process is not None
        family: set[int] = {self.process.pid}
        found = True
        while found:
            found = False
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit() or int(entry.name) in family:
                    continue
                with contextlib.suppress(OSError):
                    status = (entry / "status").read_text()
                    ppid = int(re.search(r"^PPid:\s*(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
                    if ppid in family:
                        family.add(int(entry.name))
                        found = True
                        nspid = re.search(r"^NSpid:\s*(.*)$", status, re.MULTILINE)
                        if nspid and nspid.group(1).split()[-1] == "1":
                            return int(entry.name)
        return 0

    def _link(self) -> None:
        """Addresses on both ends of the veth pair nspawn made: nothing else is routed."""
        host_if = f"ve-{self.name}"
        subprocess.run(["ip", "addr", "add", f"{self.host_address}/30", "dev", host_if], check=True)
        subprocess.run(["ip", "link", "set", host_if, "up"], check=True)
        self.sh(f"ip addr add {self.address}/30 dev host0 && ip link set host0 up", check=True)

    def run(
        self, argv: Sequence[str], *, timeout: float = 120, check: bool = False, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """A command inside the container (every namespace of its PID 1), as root."""
        result = subprocess.run(
            [
                "nsenter",
                f"--target={self.leader}",
                "--mount",
                "--uts",
                "--ipc",
                "--net",
                "--pid",
                "--cgroup",
                "--root",
                "--wd",
                "env",
                "-i",
                f"PATH={PATH_IN_CONTAINER}",
                "HOME=/root",
                "LANG=C.UTF-8",
                *argv,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{list(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def sh(
        self, script: str, *, cwd: str = "/root", check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """A shell script inside the container, run by bash with -euo pipefail from `cwd`."""
        return self.run(
            ["bash", "-euo", "pipefail", "-c", f"cd {cwd}\n{script}"], check=check, timeout=timeout
        )

    def console(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, *, timeout: float = 30) -> None:
        """Power the container off (SIGRTMIN+4 to nspawn's PID 1 is a clean poweroff)."""
        if self.process is None or self.process.poll() is not None:
            return
        if self.leader:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.leader, signal.SIGRTMIN + 4)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@contextlib.contextmanager
def booted(root: Path, workdir: Path, *, binds: dict[Path, str]) -> Iterator[Container]:
    """A booted container, powered off at the end whatever happened."""
    container = Container(root, workdir, binds=binds)
    try:
        container.start()
        yield container
    finally:
        container.stop()


if __name__ == "__main__":
    built = root_filesystem()
    print(built.path, "cached" if built.built_seconds is None else f"{built.built_seconds:.0f} s")
