"""Shared model configuration: records that cross a process boundary are frozen and
refuse unknown fields, so a typo in a publisher never vanishes silently."""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, StringConstraints

NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=False, min_length=1)]
Timestamp = AwareDatetime


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
