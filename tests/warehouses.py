"""Test warehouses: a Redshift wire-protocol proxy onto PostgreSQL, and the COPY stand-in.

redshift-connector speaks the PostgreSQL protocol, with two Redshift habits
PostgreSQL refuses: extra startup parameters (which PostgreSQL rejects as
unknown settings) and a `server_version` it parses as a plain version number.
The proxy strips the first and rewrites the second; everything else passes
through untouched, so the real driver runs real SQL on a real server.

Each statement on a real cluster is a leader-node round trip of tens of
milliseconds: the proxy can hold each one for a delay (`delay` seconds, or
REFLOAD_TEST_REDSHIFT_DELAY_MS), and it counts the round trips, the statements
and the time the client waited on them (`round_trips`, `statements`, `waited`).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

import redshift_connector

from steps.shared.provenance import LINE_COLUMN
from steps.shared.warehouse.redshift import RedshiftCatalog, RedshiftClient, RedshiftWarehouse

if TYPE_CHECKING:
    from steps.shared.mapping.sheet import Mapping

REDSHIFT_ONLY_PARAMETERS = {
    b"client_protocol_version",
    b"driver_version",
    b"os_version",
    b"driver_discovery_version",
    b"plugin_name",
    b"idp_type",
}
SSL_REQUEST = 80877103


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def _rewrite_startup(body: bytes) -> bytes:
    protocol, rest = body[:4], body[4:]
    fields = rest.split(b"\x00")
    pairs = [(fields[i], fields[i + 1]) for i in range(0, len(fields) - 2, 2) if fields[i]]
    kept = b"".join(
        k + b"\x00" + v + b"\x00" for k, v in pairs if k not in REDSHIFT_ONLY_PARAMETERS
    )
    payload = protocol + kept + b"\x00"
    return struct.pack("!I", len(payload) + 4) + payload


def _plain_version(value: bytes) -> bytes:
    match = re.match(rb"\d+(\.\d+)*", value)
    return match.group(0) if match else b"8.0.2"


class _Turns:
    """One connection's round trips: a turn starts when the client speaks after the server
    did (or first), and lasts until the server's last reply before the client speaks again.
    It reads the client's messages for the statements among them (Query, Execute)."""

    def __init__(self, proxy: RedshiftProxy) -> None:
        self.proxy = proxy
        self.started = 0.0
        self.replied_at: float | None = None  # the open turn's last reply, if any yet
        self.open = False
        self.partial = b""  # the start of a message header the next chunk completes
        self.skip = 0  # bytes of the current message still to come

    def request(self, chunk: bytes = b"") -> None:
        """The client sends: a new round trip if the server answered since; each statement
        in it is held `delay`."""
        with self.proxy.lock:
            if not (self.open and self.replied_at is None):  # else more of the same request
                self._close()
                self.open, self.started, self.replied_at = True, time.perf_counter(), None
                self.proxy.round_trips += 1
            statements = self._statements(chunk)
            self.proxy.statements += statements
        if self.proxy.delay and statements:
            time.sleep(self.proxy.delay * statements)

    def _statements(self, chunk: bytes) -> int:
        """Query and Execute messages that start in `chunk` (type byte, then int32 length)."""
        data, at, found = self.partial + chunk, self.skip, 0
        self.partial, self.skip = b"", 0
        while at < len(data):
            if len(data) - at < 5:
                self.partial = data[at:]
                return found
            found += data[at : at + 1] in (b"Q", b"E")
            at += 1 + struct.unpack("!I", data[at + 1 : at + 5])[0]
        self.skip = at - len(data)
        return found

    def reply(self) -> None:
        with self.proxy.lock:
            self.replied_at = time.perf_counter()

    def _close(self) -> None:
        if self.open and self.replied_at is not None:
            self.proxy.waited += self.replied_at - self.started
        self.open = False

    def end(self) -> None:
        with self.proxy.lock:
            self._close()


class RedshiftProxy:
    """Listens on 127.0.0.1; each client gets its own upstream PostgreSQL connection.

    `delay` (seconds; default REFLOAD_TEST_REDSHIFT_DELAY_MS, else none) holds the round
    trip of every statement (a Query, or an Execute) as a leader node that far away would;
    the driver's other round trips (the login, the Parse of a new statement) pass on
    loopback. `round_trips`, `statements` and `waited` (seconds the clients spent waiting
    on the wire, the delay included) add up over every connection."""

    def __init__(
        self,
        upstream_host: str = "127.0.0.1",
        upstream_port: int = 5432,
        delay: float | None = None,
    ) -> None:
        if delay is None:
            delay = float(os.environ.get("REFLOAD_TEST_REDSHIFT_DELAY_MS") or 0) / 1000
        self.delay = delay
        self.upstream = (upstream_host, upstream_port)
        self.lock = threading.Lock()
        self.round_trips = 0
        self.statements = 0
        self.waited = 0.0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self._stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def reset_counts(self) -> None:
        with self.lock:
            self.round_trips, self.statements, self.waited = 0, 0, 0.0

    def close(self) -> None:
        self._stopping = True
        self.server.close()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        turns = _Turns(self)
        try:
            length = struct.unpack("!I", _read_exact(client, 4))[0]
            turns.request()
            body = _read_exact(client, length - 4)
            if struct.unpack("!I", body[:4])[0] == SSL_REQUEST:
                client.sendall(b"N")  # no TLS on loopback
                turns.reply()
                length = struct.unpack("!I", _read_exact(client, 4))[0]
                turns.request()
                body = _read_exact(client, length - 4)
            upstream = socket.create_connection(self.upstream)
            # Small protocol messages: without NODELAY each round trip waits ~40 ms.
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.sendall(_rewrite_startup(body))
            threading.Thread(target=self._pipe, args=(client, upstream, turns), daemon=True).start()
            self._pipe_messages(upstream, client, turns)
        except (ConnectionError, OSError):
            pass
        finally:
            turns.end()
            for sock in (client, upstream):
                if sock is not None:
                    _close(sock)

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket, turns: _Turns) -> None:
        """Client -> server, as it comes; a statement waits out the delay first."""
        try:
            while chunk := source.recv(65536):
                turns.request(chunk)
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(target)

    @staticmethod
    def _pipe_messages(server: socket.socket, client: socket.socket, turns: _Turns) -> None:
        """Server -> client, message by message, rewriting ParameterStatus server_version."""
        while True:
            kind = _read_exact(server, 1)
            length = struct.unpack("!I", _read_exact(server, 4))[0]
            body = _read_exact(server, length - 4)
            if kind == b"S" and body.startswith(b"server_version\x00"):
                value = body[len(b"server_version\x00") :].rstrip(b"\x00")
                body = b"server_version\x00" + _plain_version(value) + b"\x00"
            client.sendall(kind + struct.pack("!I", len(body) + 4) + body)
            turns.reply()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


# Every statement the Redshift dialect ran, per connection, in order (for assertions).
STATEMENTS: list[str] = []
INSERT_BATCH_ROWS = 500
REDSHIFT_TABLE_ATTRIBUTES = re.compile(r"\n(DISTSTYLE|SORTKEY) [^\n]*")
BINDABLE = re.compile(r"\s*(\(\s*)*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)


class _ProxyClient(RedshiftClient):
    """The real Redshift client; every statement is recorded, and Redshift-only table
    attributes in CREATE TABLE are stripped before PostgreSQL runs it."""

    def _run(self, sql: str, params: Any, fetch: bool) -> tuple[list[str], list[Any]]:
        STATEMENTS.append(sql)
        # Redshift binds parameters only in what PREPARE takes (SELECT, INSERT, UPDATE,
        # DELETE; docs "PREPARE"): a CREATE TABLE AS with one fails there, not on PostgreSQL.
        if params and not BINDABLE.match(sql):
            raise redshift_connector.ProgrammingError(
                {"C": "XX000", "M": "bind parameters are not supported in this statement"}
            )
        # Redshift's table attributes (DISTSTYLE, DISTKEY, SORTKEY) are not PostgreSQL:
        # recorded as written above, executed without them.
        return super()._run(REDSHIFT_TABLE_ATTRIBUTES.sub("", sql), params, fetch)


class _ProxyCatalog(RedshiftCatalog):
    """The real Redshift catalog; only COPY FROM S3 is replaced (PostgreSQL has no S3):
    the COPY text is built by the real dialect and recorded; staging is filled with the
    same rows through the same connection instead."""

    def check_curated_uri(self, curated_uri: str) -> None:
        from steps.shared.io import storage

        if storage.is_s3(curated_uri):  # the real checks (the role, the bucket's region)
            super().check_curated_uri(curated_uri)
        else:
            self.iam_role()  # local curated files are fine here: nothing reads them from S3

    def stage(self, staging: str, mapping: Mapping, curated_uri: str) -> None:
        import pyarrow.parquet as pq

        from steps.shared.io import storage

        # Staging and COPY as the real dialect writes them: the mapped columns and the
        # rows' source lines last.
        staged = [*mapping.targets, LINE_COLUMN]
        self.sql.execute(self.lined_staging_sql(staging, mapping))
        # The manifest is written to (moto) S3 as the real dialect does; local curated
        # files have none.
        manifest = self.copy_manifest(curated_uri) if storage.is_s3(curated_uri) else curated_uri
        STATEMENTS.append(self.copy_sql(staging, staged, manifest))
        # What COPY would read: the file, or every part the (Spark engine's) manifest lists;
        # FILLRECORD leaves the line NULL for a file without it.
        with storage.local_files(storage.curated_parts(curated_uri)) as paths:
            for path in paths:
                parquet = pq.ParquetFile(path)
                columns = [c for c in staged if c in parquet.schema_arrow.names]
                names = ", ".join(self.quote(c) for c in columns)
                marks = "(" + ", ".join(["%s"] * len(columns)) + ")"
                for batch in parquet.iter_batches(INSERT_BATCH_ROWS, columns=columns):
                    rows = list(zip(*(c.to_pylist() for c in batch.columns), strict=True))
                    values = ", ".join([marks] * len(rows))
                    params = [v for row in rows for v in row]
                    # The real client's run: the rows COPY would load are not statements.
                    RedshiftClient._run(
                        self.sql,
                        f"INSERT INTO {self.quote(staging)} ({names}) VALUES {values}",
                        params,
                        fetch=False,
                    )


class RedshiftThroughProxy(RedshiftWarehouse):
    """The real Redshift dialect with the proxy's client and catalog (above)."""

    client_class = _ProxyClient
    catalog_class = _ProxyCatalog
