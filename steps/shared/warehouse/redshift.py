"""Amazon Redshift through redshift-connector: PostgreSQL's SQL, with what differs.

Staging is filled by COPY from the curated Parquet in S3. Publishing is the
shared DELETE + INSERT in one transaction (no TRUNCATE, no ALTER TABLE APPEND:
both commit implicitly on Redshift).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from steps.shared.errors import ConfigError, InfrastructureError, RefloadError, WarehouseUnavailable
from steps.shared.io import secrets, storage
from steps.shared.provenance import LINE_COLUMN
from steps.shared.warehouse.base import Capabilities, SqlClient, is_transient_sqlstate
from steps.shared.warehouse.postgres import PostgresCatalog, PostgresClient, PostgresWarehouse

if TYPE_CHECKING:
    from steps.shared.mapping.sheet import Mapping

# Redshift reports some errors as SQLSTATE XX000 (internal error) with its own error
# number as the message: 1023 is a serializable isolation violation, which a retry
# clears (often raised at COMMIT).
TRANSIENT_REDSHIFT_CODES = frozenset({"1023"})


def connect_arguments(url: str) -> dict[str, Any]:
    """redshift://user:password@host:5439/db?option=value -> redshift_connector.connect kwargs.

    Options: iam=true with cluster_identifier (+ db_user) or serverless_work_group;
    secret_arn=ARN (a Secrets Manager secret with username/password, host, port, dbname);
    region, ssl, timeout, application_name (default refload). The COPY role comes from
    iam_role= or REFLOAD_REDSHIFT_IAM_ROLE.
    """
    parts = urlsplit(url)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    args: dict[str, Any] = {
        "host": parts.hostname,
        "port": parts.port or 5439,
        "database": (parts.path or "/dev").lstrip("/") or "dev",
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "timeout": int(options.get("timeout", 30)),
        # Named, the cluster's connection log says who connected; unnamed, the driver walks
        # the Python stack (inspect.stack) to name it, ~50 ms of CPU per connection.
        "application_name": options.get("application_name", "refload"),
    }
    if options.get("ssl", "true").lower() == "false":
        args["ssl"] = False
    if "region" in options:
        args["region"] = options["region"]
    if options.get("iam", "").lower() == "true":
        args["iam"] = True
        for key in ("cluster_identifier", "db_user", "serverless_work_group", "profile"):
            if key in options:
                args[key] = options[key]
        if "serverless_work_group" in options:
            args["is_serverless"] = True
    if "secret_arn" in options:
        args.update(_secret_arguments(options["secret_arn"], options.get("region")))
    return {k: v for k, v in args.items() if v is not None}


# Endpoints name their region: CLUSTER.ID.REGION.redshift.amazonaws.com, and
# WORKGROUP.ACCOUNT.REGION.redshift-serverless.amazonaws.com.
ENDPOINT_REGION = re.compile(
    r"\.([a-z]{2}(?:-[a-z]+)+-\d+)\.redshift(?:-serverless)?\.amazonaws\.com(?:\.cn)?$"
)


def cluster_region(url: str) -> str | None:
    """The warehouse's AWS region: the URL's region= option, else its endpoint's name;
    None when neither says (a custom DNS name, a tunnel)."""
    parts = urlsplit(url)
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if options.get("region"):
        return options["region"]
    found = ENDPOINT_REGION.search((parts.hostname or "").lower())
    return found.group(1) if found else None


def region_problem(url: str, curated_uri: str) -> str | None:
    """Why COPY cannot read `curated_uri` from this warehouse's region, or None.

    COPY from Parquet does not take the REGION option: the bucket must be in the
    cluster's region. Unknown when the URL names no region (then COPY will say).
    """
    cluster = cluster_region(url)
    if cluster is None or not storage.is_s3(curated_uri):
        return None
    bucket = storage.bucket_region(curated_uri)
    if bucket == cluster:
        return None
    name = storage.split_s3(curated_uri)[0]
    return (
        f"the curated bucket '{name}' is in {bucket} and the Redshift warehouse "
        f"({urlsplit(url).hostname}) is in {cluster}: COPY from Parquet reads only a bucket "
        f"in the warehouse's region; use a curated bucket in {cluster}"
    )


def _secret_arguments(arn: str, region: str | None) -> dict[str, Any]:
    from steps.shared.io.secrets import aws_reason, read_secret

    try:
        secret = read_secret(arn, region)
    except Exception as error:
        raise InfrastructureError(
            f"cannot read the warehouse secret: {aws_reason(error)}", key=arn
        ) from None
    if secret.get("password") is not None:  # masked like the password of a URL
        secrets.remember(str(secret["password"]))
    mapped = {
        "username": "user",
        "password": "password",
        "host": "host",
        "port": "port",
        "dbname": "database",
    }
    return {mapped[k]: v for k, v in secret.items() if k in mapped}


class RedshiftClient(PostgresClient):
    """redshift-connector: PostgreSQL's SQLSTATEs and Redshift's own error numbers."""

    def _connect(self) -> Any:
        import redshift_connector

        connection = redshift_connector.connect(**connect_arguments(self.url))
        connection.autocommit = True
        return connection

    def _bound_statements(self) -> None:
        # No startup options in redshift-connector: one SET per connection, as the base does.
        SqlClient._bound_statements(self)

    def close(self) -> None:
        # On a connection the server dropped (a killed session, a failover) the driver's
        # close() cannot send its goodbye and then leaves the socket's file object open,
        # so the socket stays open until the garbage collector finds it.
        stream = getattr(self._conn, "_sock", None)
        try:
            super().close()
        finally:
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()

    def translate_error(self, error: Exception) -> RefloadError:
        import redshift_connector

        # The driver puts the server's error fields in a dict: 'C' is the SQLSTATE,
        # 'M' the message. Errors of the driver itself (the network) have no dict.
        fields = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
        code = fields.get("C")
        text = fields.get("M") or str(error)
        if fields.get("D"):
            text += f" ({fields['D']})"
        if code in ("28P01", "28000"):  # authentication failed: retrying will not help
            return InfrastructureError(f"redshift: {text}")
        redshift_code = str(fields.get("M", "")).split(":")[0].strip()
        if (
            is_transient_sqlstate(code)
            or (code == "XX000" and redshift_code in TRANSIENT_REDSHIFT_CODES)
            or (
                not fields
                and isinstance(
                    error, (redshift_connector.InterfaceError, redshift_connector.OperationalError)
                )
            )
        ):
            return WarehouseUnavailable(f"redshift: {text}")
        return InfrastructureError(f"redshift error: {text}")

    def literal(self, text: str) -> str:
        # A backslash escapes the next character in a Redshift string literal: a key
        # ending in one would swallow the closing quote.
        return super().literal(text.replace("\\", "\\\\"))


class RedshiftCatalog(PostgresCatalog):
    """Table attributes (DISTSTYLE, SORTKEY); staging by COPY from S3 with a manifest."""

    def create_table_sql(
        self,
        schema: str,
        name: str,
        mapping: Mapping,
        sort_key: list[str] | None = None,
        dist_key: str | None = None,
        history: bool = False,
    ) -> str:
        sql = super().create_table_sql(schema, name, mapping, history=history)
        # Reference tables are small and joined everywhere: a copy on every node.
        sql += (
            f"\nDISTSTYLE KEY DISTKEY ({self.quote(dist_key)})" if dist_key else ("\nDISTSTYLE ALL")
        )
        if sort_key:
            sql += f"\nSORTKEY ({', '.join(self.quote(c) for c in sort_key)})"
        return sql

    def iam_role(self) -> str:
        options = {k: v[-1] for k, v in parse_qs(urlsplit(self.sql.url).query).items()}
        role = options.get("iam_role") or os.environ.get("REFLOAD_REDSHIFT_IAM_ROLE")
        if not role:
            raise ConfigError(
                "Redshift COPY needs an IAM role: add iam_role=ARN to the "
                "warehouse URL or set REFLOAD_REDSHIFT_IAM_ROLE"
            )
        return role

    def copy_sql(self, staging: str, columns: list[str], manifest_uri: str) -> str:
        cols = ", ".join(self.quote(c) for c in columns)
        return (
            f"COPY {self.quote(staging)} ({cols}) FROM {self.sql.literal(manifest_uri)} "
            f"IAM_ROLE {self.sql.literal(self.iam_role())} FORMAT AS PARQUET MANIFEST"
            + (" FILLRECORD" if LINE_COLUMN in columns else "")
        )

    def write_manifest(self, curated_uri: str) -> str:
        """A COPY manifest that names exactly the curated object; returns its URI.

        COPY FROM a plain key loads every object whose key starts with it (a prefix);
        a manifest loads only the objects it lists. For Parquet each entry needs the
        object's content_length.
        """
        manifest = {
            "entries": [
                {
                    "url": curated_uri,
                    "mandatory": True,
                    "meta": {"content_length": storage.size(curated_uri)},
                }
            ]
        }
        uri = curated_uri.removesuffix(".parquet") + ".manifest"
        storage.write_bytes(uri, json.dumps(manifest).encode())
        return uri

    def check_curated_uri(self, curated_uri: str) -> None:
        if not storage.is_s3(curated_uri):
            raise ConfigError(
                "Redshift loads curated Parquet from S3: set --curated-root / "
                f"REFLOAD_CURATED_ROOT to an s3:// prefix (got {curated_uri})"
            )
        self.iam_role()
        problem = region_problem(self.sql.url, curated_uri)
        if problem:
            raise ConfigError(problem, file=curated_uri)

    def stage(self, staging: str, mapping: Mapping, curated_uri: str) -> None:
        # COPY from Parquet fills columns by position and wants every column of the file:
        # staging also takes the rows' source lines (steps.shared.provenance), last, which
        # the publish never selects; FILLRECORD loads a file without them (the Spark
        # engine's, or one written before they were) with NULL there.
        self.sql.execute(self.lined_staging_sql(staging, mapping))
        columns = [*mapping.targets, LINE_COLUMN]
        self.sql.execute(self.copy_sql(staging, columns, self.copy_manifest(curated_uri)))

    def lined_staging_sql(self, staging: str, mapping: Mapping) -> str:
        """Staging as the mapping types it, and the curated file's line column last."""
        line = f",\n  {self.quote(LINE_COLUMN)} BIGINT\n)"
        return self.create_staging_sql(staging, mapping).removesuffix("\n)") + line

    def copy_manifest(self, curated_uri: str) -> str:
        """The manifest COPY reads: the Spark engine's curated output already is one
        (exactly its part files); a single curated file gets one written beside it."""
        if curated_uri.endswith(storage.MANIFEST_SUFFIX):
            return curated_uri
        return self.write_manifest(curated_uri)


class RedshiftWarehouse(PostgresWarehouse):
    dialect = "redshift"
    capabilities = Capabilities(
        max_identifier_bytes=127,
        # Redshift's TEXT is VARCHAR(256); its longest VARCHAR is 65535 bytes.
        text_type="VARCHAR(65535)",
        read_only_transactions=True,
        statement_timeout=True,
        # No SET LOCAL: the session setting is enough for a check.
        transaction_settings=False,
        # No lock_timeout: a statement waits for a conflicting lock as long as it runs.
        lock_timeout=False,
        savepoints=False,
        # Redshift's LOCK takes an ACCESS EXCLUSIVE lock, which blocks readers too;
        # concurrent publishers instead meet a serializable isolation error (retried).
        publisher_lock=False,
        ddl_in_transactions=True,  # all but TRUNCATE, which commits (not used)
        supports_merge=True,
        max_columns=1600,  # CREATE TABLE: "at most 1,600 columns"
    )

    driver_modules = ("redshift_connector",)
    client_class = RedshiftClient
    catalog_class = RedshiftCatalog
    catalog: RedshiftCatalog

    def iam_role(self) -> str:
        return self.catalog.iam_role()

    def copy_sql(self, staging: str, columns: list[str], manifest_uri: str) -> str:
        return self.catalog.copy_sql(staging, columns, manifest_uri)

    def copy_manifest(self, curated_uri: str) -> str:
        return self.catalog.copy_manifest(curated_uri)
