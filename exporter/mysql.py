"""MySQL/MariaDB task source. The only module that imports pymysql."""

from __future__ import annotations

import logging
import math
import ssl

import pymysql
import pymysql.cursors

from exporter.config import DatabaseConfig, TasksConfig
from exporter.grants import excess_privileges
from exporter.source import ConnectError, QueryError, QueryTimeout, Rows, build_query
from exporter.tlsfiles import TLSFilesError, database_context

# The client-side read timeout trails the server-side limit by this much, so that the server's
# own, cleaner error normally arrives first (even on a loaded host) and the connection stays
# usable; the client timeout is the backstop for a server that does not answer at all.
_CLIENT_GRACE = 0.5

# Server error codes that mean "cut off at the timeout".
_TIMEOUT_CODES = {
    1205,  # ER_LOCK_WAIT_TIMEOUT (lock_wait_timeout, e.g. LOCK TABLES ... WRITE elsewhere)
    1969,  # ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
    3024,  # ER_QUERY_TIMEOUT (MySQL MAX_EXECUTION_TIME)
}
# Client error codes for a connection that died while idle (server restart, KILL, wait_timeout).
_LOST_CODES = {2006, 2013, 2055}


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _describe(exc: pymysql.MySQLError) -> str:
    code, message = (*exc.args, None, None)[:2]
    return f"({code}) {message}" if code is not None else str(exc)


def _code(exc: pymysql.MySQLError) -> int | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None


def _tls_hint(exc: pymysql.MySQLError, db: DatabaseConfig) -> str:
    """What to check when the server's certificate was refused."""
    cause = exc.__context__
    if not isinstance(cause, ssl.SSLCertVerificationError):
        return ""
    if "mismatch" in (cause.verify_message or ""):
        return (
            f"; the server's TLS certificate does not name {db.host}, as tls_mode"
            ' "verify_identity" requires (connect by a name it holds, or use "verify_ca")'
        )
    return (
        "; the server's TLS certificate is not trusted: it must be signed by a CA in"
        " database.tls_ca_file (or the system's CAs when that is not set)"
    )


class MySQLSource:
    """Counts tasks over one persistent, read-only, autocommit session, bounded on both sides."""

    def __init__(
        self,
        db: DatabaseConfig,
        tasks: TasksConfig,
        *,
        timeout: float,
        logger: logging.Logger | None = None,
    ) -> None:
        self._db = db
        self._query = build_query(tasks, quote)
        self._timeout = timeout
        self._log = logger
        self._conn: pymysql.connections.Connection[pymysql.cursors.Cursor] | None = None
        self._reported_excess: tuple[str, ...] = ()  # privileges beyond SELECT last warned of
        self._grants_checked = False  # on the current connection

    def count(self) -> Rows:
        # A kept connection may have died between collections (server restart, KILL,
        # wait_timeout); then the query never ran, and one retry on a fresh connection is
        # allowed, which fails on its own if the server is really gone.
        may_retry = self._conn is not None
        while True:
            try:
                return self._run()
            except pymysql.MySQLError as exc:
                self.close()
                code = _code(exc)
                if code in _TIMEOUT_CODES or "timed out" in str(exc):
                    raise QueryTimeout(
                        f"query cut off after {self._timeout:g}s: {_describe(exc)}",
                        reason="timeout",
                    ) from None
                if may_retry and code in _LOST_CODES:
                    may_retry = False
                    continue
                raise QueryError(
                    f"query failed: {_describe(exc)}", reason=f"query error {code}"
                ) from None

    def _run(self) -> Rows:
        conn = self._connect()
        with conn.cursor() as cursor:
            cursor.execute(self._query)
            rows = cursor.fetchall()
        if not self._grants_checked:
            # After the first query, not while connecting: the check adds no round trip to the
            # set-up, where a connection lost is a failed collection rather than a retry.
            self._grants_checked = True
            self._check_grants(conn)
        return [(status, int(n)) for status, n in rows]

    def _tls_context(self) -> ssl.SSLContext | None:
        """The context PyMySQL then requires TLS with, None for tls_mode disabled or preferred.
        The files are read at each new connection: renewed certificates need no restart."""
        tls = self._db.tls
        if tls.mode in ("disabled", "preferred"):
            return None
        try:
            context = database_context(
                tls.mode, ca=tls.ca_file, cert=tls.cert_file, key=tls.key_file
            )
        except TLSFilesError as exc:
            raise ConnectError(
                f"cannot use the database TLS files: {exc}", reason="database TLS files"
            ) from None
        return context

    def _connect(self) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        if self._conn is not None:
            return self._conn
        db = self._db
        where = db.socket or f"{db.host}:{db.port}"
        context = self._tls_context()
        try:
            conn = pymysql.connect(
                host=db.host,
                port=db.port,
                unix_socket=db.socket,
                user=db.user,
                password=db.password.reveal() if db.password else "",
                database=db.database,
                charset="utf8mb4",
                autocommit=True,  # each collection sees what is committed at that moment
                connect_timeout=self._timeout,
                read_timeout=self._timeout + _CLIENT_GRACE,
                write_timeout=self._timeout + _CLIENT_GRACE,
                program_name="tasks_exporter",
                ssl=context,
                # "preferred" is PyMySQL's default: TLS when the server offers it, unverified.
                ssl_disabled=True if db.tls.mode == "disabled" else None,
            )
        except pymysql.MySQLError as exc:
            raise ConnectError(
                f"cannot connect to {where} as {db.user}: {_describe(exc)}{_tls_hint(exc, db)}",
                reason=f"connect error {_code(exc)}",
            ) from None
        try:
            self._limit_session(conn)
        except pymysql.MySQLError as exc:
            conn.close()
            raise ConnectError(
                f"cannot set up the session on {where}: {_describe(exc)}",
                reason=f"session error {_code(exc)}",
            ) from None
        self._conn = conn
        self._grants_checked = False
        return conn

    def _check_grants(self, conn: pymysql.connections.Connection[pymysql.cursors.Cursor]) -> None:
        """At each new connection: warn, once per change, when the user can do more than read.

        A read-only reporter should hold read-only credentials; the session is READ ONLY anyway,
        but leaked credentials with more grants could be used elsewhere.
        """
        if self._log is None:
            return
        try:
            with conn.cursor() as cursor:
                cursor.execute("SHOW GRANTS")
                lines = [str(row[0]) for row in cursor.fetchall()]
        except pymysql.MySQLError as exc:  # not worth failing a collection over
            self._log.debug(
                "cannot check the database user's grants", extra={"kv": {"err": _describe(exc)}}
            )
            # The connection may be gone (KILLed, say) and PyMySQL then refuses to use it with
            # an error that is not "lost": start afresh next time, grants check included.
            self.close()
            return
        excess = excess_privileges(lines)
        if excess == self._reported_excess:
            return
        if excess:
            self._log.warning(
                "the database user can do more than read; grant it only SELECT on the table",
                extra={"kv": {"user": self._db.user, "excess": ", ".join(excess)}},
            )
        else:
            self._log.info(
                "the database user can now only read", extra={"kv": {"user": self._db.user}}
            )
        self._reported_excess = excess

    def _limit_session(self, conn: pymysql.connections.Connection[pymysql.cursors.Cursor]) -> None:
        """Read-only, and every statement bounded on the server side too."""
        # The statement limit covers lock waits too and fires at the timeout; lock_wait_timeout
        # (whole seconds) is a backstop set later, so the two never race to report one cut-off
        # with two different errors.
        lock_wait = math.ceil(self._timeout) + 1
        server = str(conn.get_server_info())  # type: ignore[no-untyped-call]  # untyped in the stubs
        if "mariadb" in server.lower():
            limit = f"max_statement_time = {self._timeout:.3f}"
        else:
            limit = f"max_execution_time = {math.ceil(self._timeout * 1000)}"
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
            cursor.execute(f"SET SESSION {limit}, lock_wait_timeout = {lock_wait}")

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except pymysql.MySQLError:
                pass  # closing a broken connection: nothing left to release
            finally:
                self._conn = None
