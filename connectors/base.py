"""The one interface every transport implements, and the settings every connection shares.

A connection is modelled the way impact's Connector wizard models it: a name, a direction,
a data type, a method and a methodology. A transport only has to ``put`` one finished file;
retries, timeouts and acknowledgement live in the delivery layer, not in each transport.
"""
from __future__ import annotations

import abc
from contextlib import contextmanager
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DataType = Literal["conversions", "action_modifications", "reports", "performance_bonus_detail"]
Direction = Literal["into_impact", "out_of_impact"]
Methodology = Literal["push_to_impact", "pull_from_3rd_party", "pull_from_impact"]


class ConnectionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Describes the connection, e.g. 'impact FTP conversions'.")
    direction: Direction = Field("into_impact", description="Into impact, or out of impact.")
    data_type: DataType = Field("conversions", description="Which files this connection carries.")
    methodology: Methodology = Field(description="Push to impact, pull from 3rd party or pull from impact.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one network step.")

    @model_validator(mode="after")
    def _direction_fits_methodology(self) -> "ConnectionSettings":
        # impact's wizard: data out of impact is only ever pulled from impact, and nothing
        # going into impact is; a mismatch would be a connection nobody ever serves.
        if (self.direction == "out_of_impact") != (self.methodology == "pull_from_impact"):
            raise ValueError("direction: out_of_impact goes with methodology pull_from_impact, and only with it")
        return self


class Connection(abc.ABC):
    """A destination for finished batch files.

    ``put`` is blocking (it runs in a worker thread) and must be idempotent: putting the same
    name and bytes twice leaves one file. It raises on any failure; it returns only once the
    destination has confirmed the whole file.
    """

    def __init__(self, settings: ConnectionSettings):
        self.settings = settings
        self.name = settings.name

    @abc.abstractmethod
    def put(self, name: str, data: bytes) -> None: ...

    def close(self) -> None:
        """Release pooled sessions; the default transport holds none."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class TransportError(Exception):
    """A transfer step failed; the message names the step (never a secret)."""


@contextmanager
def step(name: str) -> Iterator[None]:
    try:
        yield
    except TransportError:
        raise
    except Exception as exc:
        raise TransportError(f"{name} failed: {type(exc).__name__}: {exc}") from exc
