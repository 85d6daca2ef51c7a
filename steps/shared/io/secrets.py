"""Credentials never leave the process: redaction for every output channel.

A leaf module (standard library only): the log configuration, the alerts, the CLI's
summary and the audit rows all redact with it.

Two nets: the password part of any `scheme://user:password@host` URL, whatever
characters it holds; and every credential refload was given (the warehouse URL's
password, or the one its `secret_arn` holds, the ServiceNow and SMTP passwords, the AWS
secret key and session token), in the forms an error message may quote it: as written,
percent-decoded, JSON-escaped. A driver that refuses a malformed URL quotes the password
alone, which only the second net catches. A credential of any length is masked; one under
8 characters where a message sets it off as a value (quoted, after `=` or `password`, or
the whole text), so a 4-character password does not blank out every word that holds it.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
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
SECRET_VARIABLES = (
    "REFLOAD_SERVICENOW_PASSWORD",
    "REFLOAD_SMTP_PASSWORD",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
URL_VARIABLES = ("REFLOAD_WAREHOUSE_URL",)
# Below this length a credential is masked only where a message sets it off as a value:
# "refload" as a password must not turn `refload:dim_country:...` into `***:...`.
SHORT_SECRET_CHARS = 8

_known: set[str] = set()


def _forms(secret: str | None) -> set[str]:
    """The ways a message may quote a credential: as written, percent-decoded or -encoded,
    JSON-escaped."""
    if not secret or not secret.strip():  # a blank one would mask every space
        return set()
    forms = {secret, unquote(secret), quote(secret, safe="")}
    return forms | {json.dumps(form)[1:-1] for form in forms}


def remember(secret: str | None) -> None:
    """Mask this value wherever it appears from now on, in every form a message may quote."""
    _known.update(_forms(secret))


def _url_password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password is None and "@" in url and "://" in url:
        # A URL urllib cannot split still carries its password between ':' and '@'.
        userinfo = url.split("://", 1)[1].rpartition("@")[0]
        password = userinfo.partition(":")[2] or None
    return password


def remember_url(url: str | None) -> None:
    """Mask the password of a URL (the warehouse's) wherever it appears from now on."""
    remember(_url_password(url))


def _secrets() -> list[str]:
    # The environment's credentials as they are now (read each time: a credential rotated
    # or unset is no longer looked for), plus every one remembered.
    environment = tuple(os.environ.get(name) for name in SECRET_VARIABLES + URL_VARIABLES)
    return _sorted_secrets(environment, len(_known))


@lru_cache(maxsize=8)
def _sorted_secrets(environment: tuple[str | None, ...], _remembered: int) -> list[str]:
    """Cached while the environment and the remembered set (it only grows) stay the same."""
    secrets, urls = environment[: len(SECRET_VARIABLES)], environment[len(SECRET_VARIABLES) :]
    current = set(_known)
    for secret in secrets:
        current |= _forms(secret)
    for url in urls:
        current |= _forms(_url_password(url))
    return sorted(current, key=len, reverse=True)  # longest first: no partial leftovers


@lru_cache(maxsize=64)
def _as_value(secret: str) -> re.Pattern[str]:
    """`secret` where a message sets it off as a value: quoted (also as JSON and HTML quote
    it), after `=` or a credential's name (`password abcd`, `token: abcd`), or the whole
    text; not a bare word of prose, which may be refload's own (`refload runs ...`)."""
    value = re.escape(secret)
    return re.compile(
        rf"(?P<quote>['\"`]|\\\"|&quot;|&#x27;|&#39;){value}(?P=quote)"
        rf"|(?P<key>=|(?<![A-Za-z0-9_])(?i:password|passwd|pwd|secret|token|key)s?"
        rf"\s*[:=]?\s*(?:is\s+)?){value}(?![A-Za-z0-9_])"
        rf"|^{value}$"
    )


def _masked(match: re.Match[str]) -> str:
    quote_ = match.group("quote") or ""
    return f"{quote_}{MASK}{quote_}" if quote_ else f"{match.group('key') or ''}{MASK}"


def redact(text: str) -> str:
    """`text` with every password inside a URL and every known credential masked."""
    if "://" in text:
        text = URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    for secret in _secrets():
        if secret in text:
            if len(secret) >= SHORT_SECRET_CHARS:
                text = text.replace(secret, MASK)
            else:
                text = _as_value(secret).sub(_masked, text)
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
