"""MySQL/MariaDB task source. The only module that imports pymysql."""

from __future__ import annotations

import ipaddress
import math
import ssl
from dataclasses import replace
from datetime import UTC

import pymysql
import pymysql.cursors
from pymysql.constants import FIELD_TYPE

from exporter.config import CollectionConfig, DatabaseConfig, TasksConfig
from exporter.log import Logger
from exporter.sources.grants import excess_privileges
from exporter.sources.source import (
    Bounds,
    ConnectError,
    QueryError,
    QueryPlan,
    QueryTimeout,
    Row,
    Rows,
    build_query,
    index_statement,
    is_unindexed,
    local_naive,
    unix_time,
    utc_naive,
)
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

# How a time_column of type "auto" is read, by the column type the server reports.
_TIME_KINDS: dict[int, str] = {
    FIELD_TYPE.TIMESTAMP: "timestamp",
    FIELD_TYPE.DATETIME: "datetime",
    FIELD_TYPE.DATE: "datetime",
    FIELD_TYPE.NEWDATE: "datetime",
    **dict.fromkeys(
        (
            FIELD_TYPE.TINY,
            FIELD_TYPE.SHORT,
            FIELD_TYPE.INT24,
            FIELD_TYPE.LONG,
            FIELD_TYPE.LONGLONG,
            FIELD_TYPE.FLOAT,
            FIELD_TYPE.DOUBLE,
            FIELD_TYPE.DECIMAL,
            FIELD_TYPE.NEWDECIMAL,
        ),
        "epoch",
    ),
}


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _describe(exc: pymysql.MySQLError) -> str:
    code, message = (*exc.args, None, None)[:2]
    return f"({code}) {message}" if code is not None else str(exc)


def is_local(db: DatabaseConfig) -> bool:
    """Whether the server is on this machine: a unix socket or a loopback address."""
    if db.socket or db.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(db.host).is_loopback
    except ValueError:
        return False


def _tls_disabled(db: DatabaseConfig) -> bool | None:
    """True when no TLS is wanted; None lets pymysql use TLS when the server offers it."""
    if db.tls.mode == "disabled" or (db.tls.mode == "preferred" and is_local(db)):
        return True
    return None


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
        scan_warning_rows: int = CollectionConfig.scan_warning_rows,
        logger: Logger | None = None,
    ) -> None:
        self._db = db
        self._tasks = tasks
        self._zone = tasks.zone
        # The bounds go in as parameters, and PyMySQL then reads % in the trusted filter as one.
        self._query_tasks = (
            replace(tasks, filter=tasks.filter.replace("%", "%%"))
            if tasks.filter and tasks.window
            else tasks
        )
        # "auto" is resolved once, from the column type the server reports at the first query.
        self._kind = None if tasks.time_column_type == "auto" else tasks.time_column_type
        self._timeout = timeout
        self._scan_warning_rows = scan_warning_rows
        self._log = logger
        self._conn: pymysql.connections.Connection[pymysql.cursors.Cursor] | None = None
        self._reported_excess: tuple[str, ...] = ()  # privileges beyond SELECT last warned of
        self._grants_checked = False  # on the current connection
        self._plan: QueryPlan | None = None
        self._explained = False  # on the current connection

    @property
    def plan(self) -> QueryPlan | None:
        return self._plan

    def count(self, bounds: Bounds | None = None) -> Rows:
        # A kept connection may have died between collections (server restart, KILL,
        # wait_timeout); then the query never ran, and one retry on a fresh connection is
        # allowed, which fails on its own if the server is really gone.
        may_retry = self._conn is not None
        while True:
            try:
                return self._run(bounds)
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

    def _run(self, bounds: Bounds | None) -> Rows:
        conn = self._connect()
        if self._tasks.time_column is not None and self._kind is None:
            self._kind = self._detect_kind(conn, self._tasks.time_column)
        query, params = self._statement(bounds)
        if not self._explained:
            # Once per connection, before the query it describes: a warning about a full scan
            # comes even when that scan then runs into the timeout.
            self._explained = True
            self._plan = self._explain(conn, query, params)
        with conn.cursor() as cursor:
            cursor.execute(query, params or None)
            rows = cursor.fetchall()
        if not self._grants_checked:
            # After the first query, not while connecting: the check adds no round trip to the
            # set-up, where a connection lost is a failed collection rather than a retry.
            self._grants_checked = True
            self._check_grants(conn)
        return [self._row(row) for row in rows]

    def _statement(self, bounds: Bounds | None) -> tuple[str, list[object]]:
        """The query for the window `bounds`, and its parameters."""
        kind = self._kind
        if bounds is None or self._tasks.window is None:
            bounds = None
        oldest = (lambda m: f"UNIX_TIMESTAMP({m})") if kind == "timestamp" else (lambda m: m)
        tasks = self._query_tasks if bounds is not None else self._tasks
        query = build_query(tasks, quote, oldest=oldest, bounds=bounds)
        params: list[object] = []
        if bounds is not None:
            ends = [bounds.start] if bounds.end is None else [bounds.start, bounds.end]
            for when in ends:
                # A TIMESTAMP compares in the session's zone, set to UTC on every connection;
                # a DATETIME holds wall-clock times of time_zone; an epoch column, numbers.
                if kind == "timestamp":
                    params.append(utc_naive(when))
                elif kind == "datetime":
                    params.append(local_naive(when, self._zone))
                else:
                    params.append(when)
        return query, params

    def _row(self, row: tuple[object, ...]) -> Row:
        labels = len(self._tasks.label_columns)
        n = row[1 + labels]
        oldest = None
        if self._tasks.time_column is not None:
            zone = UTC if self._kind == "timestamp" else self._zone
            oldest = unix_time(row[2 + labels], zone)
        return Row(row[0], int(n), tuple(row[1 : 1 + labels]), oldest)  # type: ignore[call-overload]

    def _detect_kind(
        self, conn: pymysql.connections.Connection[pymysql.cursors.Cursor], column: str
    ) -> str:
        table = ".".join(quote(part) for part in self._tasks.table)
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT {quote(column)} FROM {table} LIMIT 0")
            type_code = cursor.description[0][1] if cursor.description else -1
        kind = _TIME_KINDS.get(int(type_code))
        if kind is None:
            raise QueryError(
                f"tasks.time_column {column!r} is neither DATETIME, TIMESTAMP nor a number"
                f" (MySQL type code {type_code}); set tasks.time_column_type",
                reason="time column type",
            )
        return kind

    def _explain(
        self,
        conn: pymysql.connections.Connection[pymysql.cursors.Cursor],
        query: str,
        params: list[object],
    ) -> QueryPlan | None:
        with conn.cursor() as cursor:
            cursor.execute(f"EXPLAIN {query}", params or None)
            names = [d[0].lower() for d in cursor.description or ()]
            first = cursor.fetchone()
        if first is None or "rows" not in names or "type" not in names:
            return None
        plan = dict(zip(names, first, strict=False))
        rows = int(plan["rows"] or 0)
        access = str(plan["type"] or "")
        return QueryPlan(
            estimated_rows=rows,
            access=access,
            unindexed=is_unindexed(access, rows, self._tasks, self._scan_warning_rows),
            create_index=index_statement(self._tasks, quote),
        )

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
                # "preferred" (the default) is TLS when the server offers it, unverified; to a
                # server on this machine it protects nothing, and pymysql would load the
                # system's CA certificates on every connection (1.8 MiB of resident memory).
                ssl_disabled=_tls_disabled(db),
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
        self._explained = False
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
            self._log.debug("cannot check the database user's grants", err=_describe(exc))
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
                user=self._db.user,
                excess=", ".join(excess),
            )
        else:
            self._log.info("the database user can now only read", user=self._db.user)
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
            # UTC, so that TIMESTAMP columns and the window's bounds compare and read as instants
            # whatever the server's own zone, with no hour repeated or skipped.
            cursor.execute(
                f"SET SESSION {limit}, lock_wait_timeout = {lock_wait}, time_zone = '+00:00'"
            )

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except pymysql.MySQLError:
                pass  # closing a broken connection: nothing left to release
            finally:
                self._conn = None
