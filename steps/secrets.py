"""Credentials never leave the process: redaction for every output channel.

A leaf module (standard library only): the log configuration, the alerts, the CLI's
summary and the audit rows all redact with it.

Two nets: the password part of any `scheme://user:password@host` URL, whatever
characters it holds; and every credential refload was given (the warehouse URL's
password, the ServiceNow and SMTP passwords), in the forms an error message may
quote it: as written, percent-decoded, JSON-escaped. A driver that refuses a
malformed URL quotes the password alone, which only the second net catches.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
# The password runs to the last '@' before the host: it may hold quotes, '%' or '@'.
# The scheme starts where no scheme character precedes it: without that lookbehind the
# search is quadratic in a long run of letters (a 20 KB sample value).
URL_PASSWORD = re.compile(
    r"(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*://[^/\s:@'\"]*):[^\s/]*@", re.IGNORECASE
)
# Environment variables that hold a credential (URLs: only their password).
SECRET_VARIABLES = ("REFLOAD_SERVICENOW_PASSWORD", "REFLOAD_SMTP_PASSWORD")
URL_VARIABLES = ("REFLOAD_WAREHOUSE_URL",)
# Shorter values would mask ordinary words (Redshift passwords have at least 8 characters).
MIN_SECRET_CHARS = 8

_known: set[str] = set()


def remember(secret: str | None) -> None:
    """Mask this value wherever it appears from now on, in every form a message may quote."""
    if not secret or len(secret) < MIN_SECRET_CHARS:
        return
    for form in (secret, unquote(secret), quote(secret, safe="")):
        _known.add(form)
        _known.add(json.dumps(form)[1:-1])


def remember_url(url: str | None) -> None:
    """Mask the password of a URL (the warehouse's) wherever it appears from now on."""
    if not url:
        return
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password is None and "@" in url and "://" in url:
        # A URL urllib cannot split still carries its password between ':' and '@'.
        userinfo = url.split("://", 1)[1].rpartition("@")[0]
        password = userinfo.partition(":")[2] or None
    remember(password)


def _secrets() -> Iterable[str]:
    for name in SECRET_VARIABLES:
        remember(os.environ.get(name))
    for name in URL_VARIABLES:
        remember_url(os.environ.get(name))
    return sorted(_known, key=len, reverse=True)  # longest first: no partial leftovers


def redact(text: str) -> str:
    """`text` with every password inside a URL and every known credential masked."""
    if "://" in text:
        text = URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    for secret in _secrets():
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_value(value: Any) -> Any:
    """The same, for the strings inside dicts and lists (log events, audit details)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


# --- network timeouts and Secrets Manager ----------------------------------------------


def timeouts() -> tuple[float, float]:
    """(connect, read) seconds for each call to an alert channel or Secrets Manager.

    REFLOAD_CONNECT_TIMEOUT (default 5) and REFLOAD_READ_TIMEOUT (default 20): in a VPC
    without a route to a service, its call fails after these (botocore waits 60 s per
    attempt), is logged, and the other channels still run.
    """
    return (
        float(os.environ.get("REFLOAD_CONNECT_TIMEOUT", "5")),
        float(os.environ.get("REFLOAD_READ_TIMEOUT", "20")),
    )


def read_secret(arn: str, region: str | None = None) -> dict[str, Any]:
    """A Secrets Manager secret's JSON (boto3 imported only here), within the timeouts."""
    import boto3
    from botocore.config import Config

    connect, read = timeouts()
    config = Config(connect_timeout=connect, read_timeout=read, retries={"max_attempts": 3})
    client = boto3.client(
        "secretsmanager", config=config, **({"region_name": region} if region else {})
    )
    secret = json.loads(client.get_secret_value(SecretId=arn)["SecretString"])
    return dict(secret)


def aws_reason(error: Exception) -> str:
    """A failed AWS call in a few words: the error's class and AWS's code for it
    (`ClientError AccessDeniedException`), never its message (it may quote a request)."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get(
            "HTTPStatusCode"
        )
        if code:
            return f"{type(error).__name__} {code}"
    return type(error).__name__
