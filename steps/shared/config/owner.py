"""A table's owner: who its alerts go to (emails) and which ServiceNow group gets them."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Enough to catch a name or a list pasted as one string; the mail server has the last word.
EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")


class Owner(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1, description="The owning team.")
    emails: list[str] = Field(
        default_factory=list,
        description="Recipients of this table's alerts (default: REFLOAD_ALERT_EMAIL_TO); "
        "`alert_emails` is an alias.",
    )
    servicenow_assignment_group: str | None = Field(
        default=None,
        min_length=1,
        description="The ServiceNow assignment group of this table's incidents (default: "
        "REFLOAD_SERVICENOW_ASSIGNMENT_GROUP).",
    )

    @field_validator("emails")
    @classmethod
    def _check_emails(cls, value: list[str]) -> list[str]:
        return check_emails(value)


def check_emails(value: list[str]) -> list[str]:
    bad = [address for address in value if not EMAIL.match(address)]
    if bad:
        raise ValueError(f"not an email address: {', '.join(repr(a) for a in bad)}")
    return value


def merged_owner(owner: Owner | None, alert_emails: list[str]) -> Owner | None:
    """`alert_emails` is an alias of `owner.emails`: both given and different is an error."""
    if not alert_emails:
        return owner
    if owner and owner.emails and owner.emails != alert_emails:
        raise ValueError(
            "alert_emails and owner.emails differ; alert_emails is an alias of owner.emails: "
            "keep one of them"
        )
    return (owner or Owner()).model_copy(update={"emails": alert_emails})
