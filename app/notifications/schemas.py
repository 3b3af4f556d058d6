from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

Event = Literal["run.succeeded", "run.failed", "run.cancelled"]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(..., max_length=2000, description="Where to POST: a chat tool's incoming-webhook URL.")
    events: list[Event] = Field(["run.succeeded", "run.failed"], min_length=1,
                                description="Which run endings to announce.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        url = url.strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, e.g. https://hooks.slack.com/services/…")
        if parts.username or parts.password:
            raise ValueError("must not carry a user name or password; put secrets in the URL's path, as chat tools do")
        return url

    @field_validator("events")
    @classmethod
    def _unique(cls, events: list[str]) -> list[str]:
        return list(dict.fromkeys(events))


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int
    url: str
    events: list[str]
    created_at: datetime
    last_status: int | None = None
    last_error: str | None = None
    last_delivered_at: datetime | None = None


class WebhookTestOut(BaseModel):
    ok: bool
    status: int | None
    error: str | None
