"""TLS and basic auth as real clients meet them: Python's ssl, curl, and Prometheus itself."""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import secrets
import shutil
import socket
import ssl
import statistics
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest

from testing.certificates import CA, Cert
from testing.exporter_process import (
    Exporter,
    Exporters,
    Reply,
    get,
    lines_matching,
    parse_metrics,
    task_counts,
    wait_for,
)
from testing.prometheus_server import Prometheus
from testing.web_server import ServerThread

REPO = Path(__file__).resolve().parent.parent
COST = 10  # the example's cost: ~50 ms of bcrypt here


@dataclass(frozen=True)
class PKI:
    server_ca: CA
    server: Cert
    clients_ca: CA
    client: Cert  # signed by clients_ca: let in
    rogue: Cert  # signed by a CA the exporter does not trust


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    base = tmp_path_factory.mktemp("pki")
    server_ca = CA.create(base / "server-ca", "server-ca")
    clients_ca = CA.create(base / "clients-ca", "clients-ca")
    rogue_ca = CA.create(base / "rogue-ca", "rogue-ca")
    return PKI(
        server_ca=server_ca,
        server=server_ca.issue("exporter"),
        clients_ca=clients_ca,
        client=clients_ca.issue("prometheus", client=True),
        rogue=rogue_ca.issue("intruder", client=True),
    )


def _hash(password: str, cost: int = COST) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()


def client_context(pki: PKI, cert: Cert | None = None) -> ssl.SSLContext:
    """What a scraper uses: trust the exporter's CA, present `cert` if given."""
    context = ssl.create_default_context(cafile=pki.server_ca.cert)
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    return context


@dataclass
class Secure:
    """A server serving TLS, and what its clients use (the `secure` fixture: in-process on a
    thread of its own, requiring a client certificate and basic auth)."""

    exporter: ServerThread | Exporter
    pki: PKI
    users: dict[str, str]  # user -> password


METRICS = b'# TYPE tasks_exporter_tasks gauge\ntasks_exporter_tasks{status="Success"} 6\n'


def _secure_web_file(workdir: Path, pki: PKI, users: dict[str, str]) -> Path:
    hashes = "".join(f"  {name}: '{_hash(pw)}'\n" for name, pw in users.items())
    web = workdir / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.clients_ca.cert}\n"
        f"basic_auth_users:\n{hashes}",
        encoding="utf-8",
    )
    return web


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Secure]:
    workdir = tmp_path_factory.mktemp("secure")
    users = {name: secrets.token_urlsafe(12) for name in ("alice", "carol", "dave")}
    with ServerThread(
        workdir,
        web_file=_secure_web_file(workdir, pki, users),
        body=METRICS,
        ready=True,
        ssl_context=client_context(pki, pki.client),
        auth=("alice", users["alice"]),
    ) as server:
        yield Secure(server, pki, users)


@pytest.fixture(scope="module")
def secure_process(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Exporter]:
    """The same security, in an exporter process on the demo database: what the process says
    and loads."""
    workdir = tmp_path_factory.mktemp("secure-process")
    users = {name: secrets.token_urlsafe(12) for name in ("alice", "carol", "dave")}
    exporter = Exporter(
        workdir,
        "",
        "--demo",
        "--web.config.file",
        str(_secure_web_file(workdir, pki, users)),
        "--log.level",
        "debug",
        ssl_context=client_context(pki, pki.client),
        auth=("alice", users["alice"]),
    )
    exporter.start(ready=True)
    yield exporter
    exporter.stop()


# -- each case, with Python's ssl and with curl ---------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: int | None  # None: no HTTP answer at all (TLS refused the connection)
    headers: dict[str, str]
    body: str


CASES = (
    "plain HTTP to the TLS port",
    "TLS 1.1",
    "no client certificate",
    "client certificate from another CA",
    "no credentials",
    "wrong password",
    "unknown user",
    "right credentials",
)


@dataclass(frozen=True)
class Attempt:
    tls: bool = True
    max_tls11: bool = False
    cert: str = "client"  # client, rogue or none
    auth: tuple[str, str] | None = None


def _attempt(case: str, users: dict[str, str]) -> Attempt:
    right = ("alice", users["alice"])
    return {
        "plain HTTP to the TLS port": Attempt(tls=False, auth=right),
        "TLS 1.1": Attempt(max_tls11=True, auth=right),
        "no client certificate": Attempt(cert="none", auth=right),
        "client certificate from another CA": Attempt(cert="rogue", auth=right),
        "no credentials": Attempt(),
        "wrong password": Attempt(auth=("alice", "not-" + users["alice"])),
        "unknown user": Attempt(auth=("mallory", users["alice"])),
        "right credentials": Attempt(auth=right),
    }[case]


def _cert(pki: PKI, name: str) -> Cert | None:
    return {"client": pki.client, "rogue": pki.rogue, "none": None}[name]


def with_python(secure: Secure, attempt: Attempt) -> Outcome:
    context = None
    if attempt.tls:
        context = client_context(secure.pki, _cert(secure.pki, attempt.cert))
        if attempt.max_tls11:
            with warnings.catch_warnings():  # an obsolete client, on purpose
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = ssl.TLSVersion.TLSv1
                context.maximum_version = ssl.TLSVersion.TLSv1_1
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer it at all
    try:
        reply = get(
            "127.0.0.1",
            secure.exporter.port,
            "/metrics",
            ssl_context=context,
            auth=attempt.auth,
        )
    except (OSError, http.client.HTTPException):  # ssl.SSLError, reset, closed without answer
        return Outcome(None, {}, "")
    return Outcome(reply.status, dict(reply.headers), reply.text)


def with_curl(secure: Secure, attempt: Attempt, tmp_path: Path) -> Outcome:
    scheme = "https" if attempt.tls else "http"
    argv = ["curl", "-sS", "--max-time", "5", "-D", str(tmp_path / "headers")]
    argv += ["-o", str(tmp_path / "body"), "-w", "%{http_code}"]
    argv += ["--cacert", str(secure.pki.server_ca.cert)]
    cert = _cert(secure.pki, attempt.cert)
    if cert is not None:
        argv += ["--cert", str(cert.cert), "--key", str(cert.key)]
    if attempt.max_tls11:
        argv += ["--tlsv1.0", "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0"]
    if attempt.auth is not None:
        argv += ["-u", ":".join(attempt.auth)]
    argv.append(f"{scheme}://127.0.0.1:{secure.exporter.port}/metrics")
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=15)
    if result.stdout == "000":
        assert result.returncode != 0
        return Outcome(None, {}, "")
    head = (tmp_path / "headers").read_text(encoding="latin-1").splitlines()[1:]
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head if ":" in h)}
    body = (tmp_path / "body").read_text(encoding="utf-8")
    return Outcome(int(result.stdout), headers, body)


# What the server logs (at debug) for each refused handshake: refused for the right reason.
HANDSHAKE_REASONS = {
    "TLS 1.1": "UNSUPPORTED_PROTOCOL",
    "no client certificate": "PEER_DID_NOT_RETURN_A_CERTIFICATE",
    "client certificate from another CA": "CERTIFICATE_VERIFY_FAILED",
}


@pytest.mark.parametrize("client", ["python", "curl"])
@pytest.mark.parametrize("case", CASES)
def test_each_case_with_real_clients(
    secure: Secure, tmp_path: Path, client: str, case: str
) -> None:
    """Python's ssl and curl get the same answers: plain HTTP a 400 saying to use HTTPS, TLS
    below 1.2 and missing or foreign client certificates no connection at all, missing or wrong
    credentials 401 with a Basic challenge, and only the right ones the metrics."""
    log_before = len(secure.exporter.log())
    attempt = _attempt(case, secure.users)
    outcome = (
        with_python(secure, attempt) if client == "python" else with_curl(secure, attempt, tmp_path)
    )
    if case == "plain HTTP to the TLS port":
        assert outcome.status == 400
        assert outcome.body == "Client sent an HTTP request to an HTTPS server.\n"
        assert "tasks_exporter" not in outcome.body
    elif case in HANDSHAKE_REASONS:
        assert outcome.status is None
        wait_for(
            lambda: HANDSHAKE_REASONS[case] in secure.exporter.log()[log_before:],
            timeout=5,
            what=f"a TLS handshake failure for {HANDSHAKE_REASONS[case]}",
        )
    elif case == "right credentials":
        assert outcome.status == 200
        assert task_counts(parse_metrics(outcome.body))
    else:
        assert outcome.status == 401
        challenge = outcome.headers["www-authenticate"]
        assert challenge == 'Basic realm="tasks_exporter", charset="UTF-8"'
        assert "tasks_exporter_tasks" not in outcome.body


def test_a_tls_client_that_closes_after_its_answer_leaves_no_error_behind(
    tmp_path: Path, pki: PKI
) -> None:
    """curl reads its answer over TLS and closes: the connection ends without an error
    (Python 3.11's SSL transport, closed on both sides, cannot be aborted any more)."""
    server = _serve(tmp_path, pki, _server_tls(pki))
    try:
        for _ in range(3):
            assert _curl_tls(server.port, pki) == "200"
    finally:
        server.stop()
    assert server.loop_errors == []


def test_start_line_says_what_is_enforced(secure_process: Exporter) -> None:
    """The start line names the web config file, the TLS floor, the client certificate policy
    and how many users basic auth knows."""
    first = secure_process.log().splitlines()[0]
    assert 'msg="tasks_exporter started"' in first
    assert "web_config=" in first
    assert "tls=TLS12+ client_auth=RequireAndVerifyClientCert basic_auth_users=3" in first


def _mapped(exporter: Exporter, library: str) -> bool:
    """Whether the running exporter has loaded a native library (its maps name the file)."""
    assert exporter.process is not None
    maps = Path(f"/proc/{exporter.process.pid}/maps").read_text(encoding="utf-8")
    return library in maps


def test_yaml_and_bcrypt_are_loaded_only_with_a_web_config_file(
    exporters: Exporters, secure_process: Exporter, tmp_path: Path
) -> None:
    """PyYAML's and bcrypt's native code is in memory only in an exporter given a web config
    file (it checked a password); one without a file never loads them."""
    assert secure_process.get("/-/healthy").status == 200
    assert _mapped(secure_process, "/yaml/_yaml.")
    assert _mapped(secure_process, "/bcrypt/_bcrypt.")
    plain = exporters(tmp_path, "", "--demo").start(ready=True)
    try:
        assert plain.get("/metrics").status == 200
        assert not _mapped(plain, "/yaml/_yaml.")
        assert not _mapped(plain, "/bcrypt/_bcrypt.")
    finally:
        plain.stop()


def test_every_page_needs_credentials(secure: Secure) -> None:
    """Basic auth covers every path, the health endpoints included, for HEAD as for GET."""
    for path in ("/", "/metrics", "/-/healthy", "/-/ready", "/nope"):
        for method in ("GET", "HEAD"):
            assert secure.exporter.get(path, method=method, auth=None).status == 401, path
    assert secure.exporter.get("/-/healthy").status == 200
    assert secure.exporter.get("/nope").status == 404


def test_handshakes_cut_off_at_the_request_timeout_free_their_slot(
    tmp_path: Path, pki: PKI
) -> None:
    """Clients that start a TLS handshake and stall are cut off at request_timeout, and their
    connections no longer count: a scraper afterwards closes no one to get a slot."""
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n",
        encoding="utf-8",
    )
    server = ServerThread(
        tmp_path, web_file=web, max_connections=2, request_timeout=0.5,
        ssl_context=client_context(pki),
    )  # fmt: skip
    stalled = []
    with server:
        try:
            for _ in range(2):  # a TLS record header, then nothing
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.sendall(b"\x16\x03\x01\x02\x00")
                stalled.append(sock)
            for sock in stalled:
                assert sock.recv(1) == b""  # cut off by the server...
            assert server.get("/-/healthy").status == 200  # ...and the slots are free again
            assert "connection limit reached" not in server.log()
        finally:
            for sock in stalled:
                sock.close()


# -- timing and the password cache ----------------------------------------------------------


def _timed_401s(secure: Secure, user: str, password: str, n: int) -> list[float]:
    """Seconds each of n refused requests took, on one kept-alive connection."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", secure.exporter.port, context=secure.exporter.ssl_context, timeout=10
    )
    times = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            reply = _request(conn, (user, password))
            times.append(time.perf_counter() - started)
            assert reply.status == 401
    finally:
        conn.close()
    return times


def _request(conn: http.client.HTTPSConnection, auth: tuple[str, str]) -> Reply:
    token = base64.b64encode(":".join(auth).encode()).decode()
    conn.request("GET", "/-/healthy", headers={"Authorization": f"Basic {token}"})
    response = conn.getresponse()
    body = response.read()
    return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)


def _bcrypt_seconds() -> float:
    """How long one bcrypt check of the test's cost takes on this machine now."""
    hashed = _hash("x").encode()
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        bcrypt.checkpw(b"y", hashed)
        runs.append(time.perf_counter() - started)
    return min(runs)


def test_refusal_takes_as_long_for_an_unknown_user(secure: Secure) -> None:
    """A wrong password for an existing user and any password for a user that does not exist
    cost one bcrypt each, so their 401s cannot be told apart by time."""
    one_bcrypt = _bcrypt_seconds()
    known, unknown = [], []
    for _ in range(3):  # interleaved, so that load on the machine hits both alike
        known += _timed_401s(secure, "alice", "wrong-password", 2)
        unknown += _timed_401s(secure, "nobody-by-this-name", "wrong-password", 2)
    known_median, unknown_median = statistics.median(known), statistics.median(unknown)
    assert known_median > 0.6 * one_bcrypt, (known, one_bcrypt)  # bcrypt ran
    assert unknown_median > 0.6 * one_bcrypt, (unknown, one_bcrypt)  # for the unknown user too
    # Equal but for noise (bounds wide enough for a busy machine; skipping bcrypt for unknown
    # users would make theirs ~50 times faster).
    assert 2 / 3 < unknown_median / known_median < 3 / 2, (known, unknown)


def test_a_verified_password_is_not_rehashed_on_every_scrape(secure: Secure) -> None:
    """The first request with a password costs a bcrypt; the following ones with the same
    password do not (they are answered in a fraction of that time)."""
    one_bcrypt = _bcrypt_seconds()
    conn = http.client.HTTPSConnection(
        "127.0.0.1", secure.exporter.port, context=secure.exporter.ssl_context, timeout=10
    )
    times = []
    try:
        for _ in range(6):
            started = time.perf_counter()
            assert _request(conn, ("carol", secure.users["carol"])).status == 200
            times.append(time.perf_counter() - started)
    finally:
        conn.close()
    assert times[0] > 0.6 * one_bcrypt, (times, one_bcrypt)
    assert statistics.median(times[1:]) < 0.3 * one_bcrypt, (times, one_bcrypt)


def test_password_checks_do_not_stall_other_scrapers(secure: Secure) -> None:
    """While a burst of wrong passwords keeps bcrypt busy, a scraper whose password was
    verified before is answered at once: bcrypt runs off the event loop."""
    assert secure.exporter.get("/-/healthy", auth=("dave", secure.users["dave"])).status == 200
    burst = [
        threading.Thread(target=_timed_401s, args=(secure, "alice", f"guess-{i}", 2))
        for i in range(6)
    ]
    for thread in burst:
        thread.start()
    try:
        time.sleep(0.1)  # the burst is queued on the bcrypt threads
        started = time.perf_counter()
        reply = secure.exporter.get("/metrics", auth=("dave", secure.users["dave"]))
        elapsed = time.perf_counter() - started
        assert reply.status == 200
        assert any(t.is_alive() for t in burst)  # still checking the guesses meanwhile
    finally:
        for thread in burst:
            thread.join(30)
    # Waiting in line behind the guesses would take about 12 bcrypt checks on two threads.
    assert elapsed < 3 * _bcrypt_seconds(), elapsed


# -- changes without a restart ---------------------------------------------------------------


def _atomic_write(path: Path, text: str) -> None:
    """Replace a file the way editors and configuration tools do: write aside, rename."""
    aside = path.with_suffix(".new")
    aside.write_text(text, encoding="utf-8")
    aside.replace(path)


def _presented(port: int, pki: PKI) -> str:
    """SHA-256 of the certificate the exporter presents on a new connection."""
    context = client_context(pki)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        conn.connect()
        assert isinstance(conn.sock, ssl.SSLSocket)
        der = conn.sock.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).hexdigest()
    finally:
        conn.close()


def test_users_and_certificates_change_without_a_restart(
    exporters: Exporters, tmp_path: Path, pki: PKI
) -> None:
    """Editing the web config file changes the users, and replacing the certificate files
    changes the certificate, for new connections within about a second; an invalid edit is
    logged once and the last valid configuration stays in force."""
    shutil.copy(pki.server.cert, tmp_path / "tls.crt")
    shutil.copy(pki.server.key, tmp_path / "tls.key")
    web = tmp_path / "web.yml"
    tls = "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
    _atomic_write(web, f"{tls}basic_auth_users:\n  alice: '{_hash('one', 4)}'\n")
    exporter = exporters(
        tmp_path, "", "--demo", "--web.config.file", str(web),
        ssl_context=client_context(pki), auth=("alice", "one"),
    ).start(ready=True)  # fmt: skip
    try:
        assert _presented(exporter.port, pki) == pki.server.fingerprint()
        _atomic_write(web, f"{tls}basic_auth_users:\n  bob: '{_hash('two', 4)}'\n")
        wait_for(
            lambda: exporter.get("/-/healthy", auth=("bob", "two")).status == 200,
            timeout=5,
            what="the new user to be let in",
        )
        assert exporter.get("/-/healthy", auth=("alice", "one")).status == 401
        assert "web config file reloaded" in exporter.log()

        # Files are checked when connections arrive: each wait below keeps connecting.
        renewed = pki.server_ca.issue("renewed", directory=tmp_path)
        renewed_fingerprint = renewed.fingerprint()
        renewed.key.replace(tmp_path / "tls.key")  # the key first: a renewal half done
        wait_for(
            lambda: _presented(exporter.port, pki) and "keeping the previous" in exporter.log(),
            timeout=5,
            what="the mismatched key to be refused",
        )
        assert exporter.get("/-/healthy", auth=("bob", "two")).status == 200  # still served
        renewed.cert.replace(tmp_path / "tls.crt")
        wait_for(
            lambda: _presented(exporter.port, pki) == renewed_fingerprint,
            timeout=5,
            what="the renewed certificate",
        )
        (failure,) = lines_matching(exporter.log(), "keeping the previous one")
        assert "KEY_VALUES_MISMATCH" in failure

        _atomic_write(web, "tls_server_config: [\n")
        wait_for(
            lambda: (
                _presented(exporter.port, pki)
                and len(lines_matching(exporter.log(), "keeping the previous one")) == 2
            ),
            timeout=5,
            what="the invalid edit to be logged",
        )
        for _ in range(4):  # more connections, more checks of the same invalid file...
            _presented(exporter.port, pki)
            time.sleep(0.4)
        assert len(lines_matching(exporter.log(), "keeping the previous one")) == 2  # ...silent
        assert exporter.get("/-/healthy", auth=("bob", "two")).status == 200
    finally:
        exporter.stop()


# -- Prometheus -------------------------------------------------------------------------------


def test_prometheus_scrapes_over_tls_with_basic_auth_using_the_example(
    exporters: Exporters, tmp_path: Path, pki: PKI
) -> None:
    """A real Prometheus scrapes the exporter configured with examples/web-config.yml (only
    the placeholder hash replaced, certificate files where it names them): up is 1 and the
    task counts arrive."""
    password = secrets.token_urlsafe(16)
    example = (REPO / "examples" / "web-config.yml").read_text(encoding="utf-8")
    placeholder = "$2y$10$THIS.IS.A.PLACEHOLDER.REPLACE.IT.WITH.YOUR.OWN.HASH.."
    assert placeholder in example
    (tmp_path / "web-config.yml").write_text(
        example.replace(placeholder, _hash(password)), encoding="utf-8"
    )
    shutil.copy(pki.server.cert, tmp_path / "tasks_exporter.crt")
    shutil.copy(pki.server.key, tmp_path / "tasks_exporter.key")
    exporter = exporters(
        tmp_path / "exporter", "", "--demo", "--web.config.file", str(tmp_path / "web-config.yml"),
        ssl_context=client_context(pki), auth=("prometheus", password),
    ).start(ready=True)  # fmt: skip
    password_file = tmp_path / "scrape-password"
    password_file.write_text(password, encoding="utf-8")
    scrape = f"""
  - job_name: tasks
    scheme: https
    tls_config:
      ca_file: {pki.server_ca.cert}
    basic_auth:
      username: prometheus
      password_file: {password_file}
    static_configs:
      - targets: ["127.0.0.1:{exporter.port}"]
"""
    prometheus = Prometheus(tmp_path / "prometheus", scrape).start()
    try:
        wait_for(
            lambda: prometheus.value('up{job="tasks"}') == 1,
            timeout=20,
            what=f"Prometheus to scrape the exporter\n{prometheus.log()}",
        )
        assert (prometheus.value('sum(tasks_exporter_tasks{job="tasks"})') or 0) >= 120
        assert prometheus.value('tasks_exporter_up{job="tasks"}') == 1
    finally:
        prometheus.stop()
        exporter.stop()


# -- what the handshake offers ----------------------------------------------------------------


def handshake(port: int, pki: PKI, *args: str) -> dict[str, str] | None:
    """What `openssl s_client` negotiates with the exporter given `args` (protocol, cipher,
    group...), or None when the handshake fails."""
    result = subprocess.run(
        [
            *("openssl", "s_client", "-brief", "-connect", f"127.0.0.1:{port}"),
            *("-CAfile", str(pki.server_ca.cert), "-verify_return_error", *args),
        ],
        input="",
        capture_output=True,
        text=True,
        check=False,
        timeout=15,
    )
    if result.returncode != 0 or "CONNECTION ESTABLISHED" not in result.stderr:
        return None
    fields = (line.partition(": ") for line in result.stderr.splitlines())
    return {name: value for name, sep, value in fields if sep}


@pytest.fixture(scope="module")
def tls_only(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[ServerThread]:
    """A server serving TLS with the default settings: a certificate and nothing else."""
    workdir = tmp_path_factory.mktemp("tls-only")
    web = workdir / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n",
        encoding="utf-8",
    )
    with ServerThread(workdir, web_file=web, ssl_context=client_context(pki)) as server:
        yield server


AEAD_TLS12: tuple[str, ...] = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384")
AEAD_TLS12 += ("ECDHE-ECDSA-CHACHA20-POLY1305",)
CBC_TLS12: tuple[str, ...] = ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384")
CBC_TLS12 += ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA")


def test_tls12_offers_only_aead_cipher_suites_by_default(tls_only: ServerThread, pki: PKI) -> None:
    """A TLS 1.2 client offering one CBC suite is refused; each AEAD suite (GCM, ChaCha20) is
    negotiated when offered alone."""
    for cipher in AEAD_TLS12:
        got = handshake(tls_only.port, pki, "-tls1_2", "-cipher", cipher)
        assert got is not None, cipher
        assert got["Ciphersuite"] == cipher
    for cipher in CBC_TLS12:
        assert handshake(tls_only.port, pki, "-tls1_2", "-cipher", cipher) is None, cipher


def _serve(
    workdir: Path,
    pki: PKI,
    web_text: str,
    client: Cert | None = None,
    *,
    tls: bool = True,
    max_connections: int = 100,
) -> ServerThread:
    """A server (in-process, on a thread of its own) with this web config file, reached as
    `client`; stop() it."""
    workdir.mkdir(parents=True, exist_ok=True)
    web = workdir / "web.yml"
    web.write_text(web_text, encoding="utf-8")
    web.chmod(0o600)  # it may hold a key inline
    return ServerThread(
        workdir, web_file=web, ssl_context=client_context(pki, client) if tls else None,
        max_connections=max_connections,
    ).start()  # fmt: skip


def _serve_process(
    exporters: Exporters, workdir: Path, pki: PKI, web_text: str, *, tls: bool = True
) -> Exporter:
    """An exporter process (demo database) with this web config file."""
    workdir.mkdir(parents=True, exist_ok=True)
    web = workdir / "web.yml"
    web.write_text(web_text, encoding="utf-8")
    web.chmod(0o600)  # it may hold a key inline
    return exporters(
        workdir, "", "--demo", "--web.config.file", str(web), "--log.level", "debug",
        ssl_context=client_context(pki) if tls else None,
    ).start()  # fmt: skip


def _server_tls(pki: PKI, extra: str = "") -> str:
    return (
        f"tls_server_config:\n  cert_file: {pki.server.cert}\n  key_file: {pki.server.key}\n"
        + extra
    )


GCM128, GCM256, CHACHA, CBC128 = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
)


def test_cipher_suites_are_the_listed_ones_in_the_servers_order_unless_told_otherwise(
    tmp_path: Path, pki: PKI
) -> None:
    """With cipher_suites (Go's names), TLS 1.2 offers exactly those, a CBC one included when
    listed; the server's order wins, and the client's once prefer_server_cipher_suites is
    false (picked up from the edited file); openssl, curl and Python's ssl alike."""
    suites = (
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,"
        " TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,"
        " TLS_AES_128_GCM_SHA256]\n"
    )
    exporter = _serve(tmp_path, pki, _server_tls(pki, suites))
    try:
        port = exporter.port
        for cipher in (GCM128, CHACHA, CBC128):
            got = handshake(port, pki, "-tls1_2", "-cipher", cipher)
            assert (got or {}).get("Ciphersuite") == cipher, cipher
        assert handshake(port, pki, "-tls1_2", "-cipher", GCM256) is None
        got = handshake(port, pki, "-tls1_2", "-cipher", f"{CHACHA}:{GCM128}")
        assert (got or {}).get("Ciphersuite") == GCM128  # the server's first
        assert _python_cipher(port, pki, f"{CHACHA}:{GCM128}") == GCM128
        assert _curl_cipher(port, pki, f"{CHACHA}:{GCM128}") == GCM128
        assert _curl_cipher(port, pki, GCM256) is None
        got = handshake(port, pki, "-tls1_3")
        assert (got or {}).get("Protocol version") == "TLSv1.3"

        web = tmp_path / "web.yml"
        _atomic_write(web, _server_tls(pki, suites + "  prefer_server_cipher_suites: false\n"))
        web.chmod(0o600)
        wait_for(
            lambda: (
                (got := handshake(port, pki, "-tls1_2", "-cipher", f"{CHACHA}:{GCM128}"))
                and got["Ciphersuite"] == CHACHA
            ),
            timeout=5,
            what="the client's order to win",
        )
        assert _python_cipher(port, pki, f"{CHACHA}:{GCM128}") == CHACHA
        assert _curl_cipher(port, pki, f"{CHACHA}:{GCM128}") == CHACHA
    finally:
        exporter.stop()


def _python_cipher(port: int, pki: PKI, ciphers: str) -> str | None:
    """The suite Python's ssl gets over TLS 1.2 offering `ciphers` in that order, or None."""
    context = client_context(pki)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return _python_tls(port, context)


def _curl_cipher(port: int, pki: PKI, ciphers: str) -> str | None:
    """The suite curl reports using over TLS 1.2 offering `ciphers`, or None."""
    argv = ["curl", "-sSv", "--max-time", "5", "-o", "/dev/null", "--cacert"]
    argv += [str(pki.server_ca.cert), "--tls-max", "1.2", "--ciphers", ciphers]
    argv.append(f"https://127.0.0.1:{port}/-/healthy")
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=15)
    match = re.search(r"SSL connection using TLSv1\.2 / (\S+)", result.stderr)
    return match[1] if match and result.returncode == 0 else None


def test_curve_preferences_limits_the_key_exchange_to_the_curve(tmp_path: Path, pki: PKI) -> None:
    """curve_preferences with one curve: clients offering it connect (TLS 1.2 and 1.3), a
    client offering only another curve cannot; openssl, curl and Python's ssl alike."""
    exporter = _serve(tmp_path, pki, _server_tls(pki, "  curve_preferences: [CurveP384]\n"))
    try:
        for version in ("-tls1_2", "-tls1_3"):
            # The client prefers P-256 (its certificate's curve, which TLS 1.2 needs listed).
            got = handshake(exporter.port, pki, version, "-groups", "P-256:P-384")
            assert got is not None, version
            assert "384" in got.get("Server Temp Key", ""), got  # P-384 or secp384r1
            assert handshake(exporter.port, pki, version, "-groups", "X25519:P-256") is None
        for curve, served in (("P-384", True), ("P-256", False)):
            status = _curl_tls(exporter.port, pki, "--tlsv1.3", "--curves", curve)
            assert status == ("200" if served else "000"), curve
            context = client_context(pki)
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            context.set_ecdh_curve({"P-384": "secp384r1", "P-256": "prime256v1"}[curve])
            assert (_python_tls(exporter.port, context) is not None) == served, curve
    finally:
        exporter.stop()


def _pem(path: Path) -> str:
    """A PEM file as a YAML literal block, indented for tls_server_config."""
    lines = path.read_text(encoding="ascii").strip().splitlines()
    return "|\n" + "".join(f"    {line}\n" for line in lines)


def test_inline_certificate_key_and_client_ca_work_like_files(tmp_path: Path, pki: PKI) -> None:
    """cert, key and client_ca given inline in the file serve TLS and verify client
    certificates as the _file forms do, for Python's ssl and curl alike."""
    web = (
        f"tls_server_config:\n  cert: {_pem(pki.server.cert)}  key: {_pem(pki.server.key)}"
        f"  client_ca: {_pem(pki.clients_ca.cert)}"
        "  client_auth_type: RequireAndVerifyClientCert\n"
    )
    exporter = _serve(tmp_path, pki, web, client=pki.client)
    try:
        assert _presented_with(exporter.port, pki, pki.client) == pki.server.fingerprint()
        assert exporter.get("/metrics").status == 200
        secure = Secure(exporter, pki, {"alice": ""})
        for cert, expected in (("client", 200), ("rogue", None), ("none", None)):
            outcome = with_curl(secure, Attempt(cert=cert), tmp_path)
            assert outcome.status == expected, cert
            outcome = with_python(secure, Attempt(cert=cert))
            assert outcome.status == expected, cert
    finally:
        exporter.stop()


def _presented_with(port: int, pki: PKI, cert: Cert) -> str:
    context = client_context(pki, cert)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).hexdigest()


def test_client_allowed_sans_lets_in_only_certificates_naming_an_allowed_san(
    tmp_path: Path, pki: PKI
) -> None:
    """With client_allowed_sans, a verified client certificate is let in only if one of its
    SANs (DNS, IP, e-mail or URI) is listed: others get no HTTP answer at all, with Python's
    ssl and curl, and the refusal is logged at debug."""
    ca = pki.clients_ca
    named = {
        "dns": ca.issue("by-dns", sans="DNS:scraper.example", client=True, directory=tmp_path),
        "ipv6": ca.issue("by-ip", sans="IP:2001:db8::7", client=True, directory=tmp_path),
        "uri": ca.issue(
            "by-uri", sans="URI:spiffe://example/prom", client=True, directory=tmp_path
        ),
        "other": ca.issue("other", sans="DNS:intruder.example", client=True, directory=tmp_path),
    }
    extra = (
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca.cert}\n"
        "  client_allowed_sans: [scraper.example, '2001:db8::7', 'spiffe://example/prom']\n"
    )
    exporter = _serve(
        tmp_path / "exporter", pki, _server_tls(pki, extra), client=named["dns"],
        max_connections=2,
    )  # fmt: skip
    try:
        for name, cert in named.items():
            expected = None if name == "other" else 200
            context = client_context(pki, cert)
            try:
                status: int | None = exporter.get("/metrics", ssl_context=context).status
            except (OSError, http.client.HTTPException):
                status = None
            assert status == expected, name
            argv = ["curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}"]
            argv += ["--cacert", str(pki.server_ca.cert), "--cert", str(cert.cert)]
            argv += ["--key", str(cert.key), f"https://127.0.0.1:{exporter.port}/metrics"]
            result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=15)
            assert result.stdout == ("000" if expected is None else "200"), (name, result)
        assert "no allowed SAN in the client certificate" in exporter.log()
        # Each refused connection is closed and forgotten: none holds one of the two slots.
        refused = client_context(pki, named["other"])
        for _ in range(6):
            with pytest.raises((OSError, http.client.HTTPException)):
                exporter.get("/metrics", ssl_context=refused)
        assert "connection limit reached" not in exporter.log()
        assert exporter.get("/metrics").status == 200
    finally:
        exporter.stop()


def test_rate_limit_answers_429_beyond_the_burst_for_all_clients_together(
    exporters: Exporters, tmp_path: Path, pki: PKI
) -> None:
    """rate_limit lets `burst` requests through at once, answers 429 Too Many Requests beyond
    it, from any client address (one bucket, as the toolkit), and one more request per
    interval after that."""
    exporter = _serve_process(
        exporters, tmp_path, pki, "rate_limit:\n  interval: 500ms\n  burst: 3\n", tls=False
    )
    time.sleep(1.6)  # the start-up checks took tokens: let the bucket fill again

    def status(source: str) -> int:
        conn = http.client.HTTPConnection(
            "127.0.0.1", exporter.port, timeout=5, source_address=(source, 0)
        )
        try:
            conn.request("GET", "/-/healthy")
            return conn.getresponse().status
        finally:
            conn.close()

    try:
        assert 'rate_limit="3, then 1 per 0.5s"' in exporter.log().splitlines()[0]
        assert [status(s) for s in ("127.0.0.1", "127.0.0.2", "127.0.0.3")] == [200] * 3
        assert status("127.0.0.4") == 429
        argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}"]
        curl = subprocess.run(
            [*argv, f"http://127.0.0.1:{exporter.port}/metrics"],
            capture_output=True, text=True, check=False, timeout=15,
        )  # fmt: skip
        assert curl.stdout == "429"
        time.sleep(0.6)
        assert status("127.0.0.1") == 200
        assert status("127.0.0.1") == 429
    finally:
        exporter.stop()


def _curl_tls(port: int, pki: PKI, *args: str) -> str:
    """The HTTP status curl gets for /-/healthy with these TLS options ("000": no connection)."""
    argv = ["curl", "-sS", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}"]
    argv += ["--cacert", str(pki.server_ca.cert), *args, f"https://127.0.0.1:{port}/-/healthy"]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=15).stdout


def _python_tls(port: int, context: ssl.SSLContext) -> str | None:
    """The cipher suite Python's ssl negotiates with this client context, or None."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            cipher = tls.cipher()
            return None if cipher is None else cipher[0]
    except OSError:
        return None


def test_default_tls12_suites_with_curl_and_python(tls_only: ServerThread, pki: PKI) -> None:
    """curl and Python's ssl, limited to TLS 1.2 and one CBC suite, cannot connect by default;
    with an AEAD suite they can."""
    for cipher in (*CBC_TLS12[:2], AEAD_TLS12[0]):
        aead = cipher in AEAD_TLS12
        status = _curl_tls(tls_only.port, pki, "--tls-max", "1.2", "--ciphers", cipher)
        assert status == ("200" if aead else "000"), cipher
        context = client_context(pki)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(cipher)
        assert _python_tls(tls_only.port, context) == (cipher if aead else None)


def test_min_and_max_version_bound_what_clients_may_speak(tmp_path: Path, pki: PKI) -> None:
    """min_version TLS13 refuses a TLS 1.2-only client; max_version TLS12 refuses a TLS
    1.3-only one; openssl, curl and Python's ssl alike."""
    for bound, allowed, refused in (("min_version: TLS13", "1.3", "1.2"),
                                    ("max_version: TLS12", "1.2", "1.3")):  # fmt: skip
        exporter = _serve(tmp_path / bound[:3], pki, _server_tls(pki, f"  {bound}\n"))
        try:
            flag = {"1.2": "-tls1_2", "1.3": "-tls1_3"}
            assert (handshake(exporter.port, pki, flag[allowed]) or {}).get(
                "Protocol version"
            ) == f"TLSv{allowed}"
            assert handshake(exporter.port, pki, flag[refused]) is None
            curl = {"1.2": ("--tlsv1.2", "--tls-max", "1.2"), "1.3": ("--tlsv1.3",)}
            assert _curl_tls(exporter.port, pki, *curl[allowed]) == "200"
            assert _curl_tls(exporter.port, pki, *curl[refused]) == "000"
            version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
            for spoken, expected in ((allowed, True), (refused, False)):
                context = client_context(pki)
                context.minimum_version = context.maximum_version = version[spoken]
                assert (_python_tls(exporter.port, context) is not None) == expected
        finally:
            exporter.stop()


def test_verify_client_cert_if_given_lets_in_no_certificate_but_not_a_bad_one(
    tmp_path: Path, pki: PKI
) -> None:
    """VerifyClientCertIfGiven: a client without a certificate is served, one with a
    certificate from the trusted CA too, one with a certificate from another CA is refused in
    the handshake; curl and Python's ssl alike."""
    extra = (
        f"  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {pki.clients_ca.cert}\n"
    )
    exporter = _serve(tmp_path, pki, _server_tls(pki, extra))
    try:
        secure = Secure(exporter, pki, {})
        for cert, expected in (("none", 200), ("client", 200), ("rogue", None)):
            assert with_curl(secure, Attempt(cert=cert), tmp_path).status == expected, cert
            assert with_python(secure, Attempt(cert=cert)).status == expected, cert
    finally:
        exporter.stop()
