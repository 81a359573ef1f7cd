"""The one interface every transport implements, and the settings every connection shares.

A connection is modelled the way impact's Connector wizard models it: a name, a direction,
a data type, a method and a methodology. A transport only has to ``put`` one finished file;
retries, timeouts and acknowledgement live in the delivery layer, not in each transport.
"""
from __future__ import annotations

import abc
import secrets
from contextlib import contextmanager
from typing import Callable, Iterator, Literal

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

    def probe(self) -> str:
        """Test the connection the way ``put`` would use it, without creating a file impact would
        process: log in (verifying the certificate or host key), and where impact pulls from the
        folder, write, rename and remove a probe file there. Returns what was checked; raises
        TransportError naming the failing step. Only ``imref-stream check`` calls it: a transport
        does no I/O for it on its own."""
        raise TransportError(f"probe: {type(self).__name__} cannot be checked without an upload")

    def close(self) -> None:
        """Release pooled sessions; the default transport holds none."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class TransportError(Exception):
    """A transfer step failed; the message names the step (never a secret)."""


def probe_folder(write: Callable[[str], None], rename: Callable[[str, str], None],
                 remove: Callable[[str], None]) -> str:
    """Write, rename and remove a probe file in a folder impact pulls from. Its names have the form
    of the transports' temporary names (``.name.part``), which whoever reads the folder must already
    skip, so impact never processes it."""
    first = f".imref-stream-check-{secrets.token_hex(4)}.part"
    second = first.replace(".part", "-renamed.part")
    with step("write probe file"):
        write(first)
    try:
        with step("rename probe file"):
            rename(first, second)
    except TransportError:
        try:
            remove(first)
        except Exception:
            pass  # the rename's error is the one to report
        raise
    with step(f"remove probe file {second}"):
        remove(second)
    return "writable: a probe file was written, renamed and removed"


@contextmanager
def step(name: str) -> Iterator[None]:
    try:
        yield
    except TransportError:
        raise
    except Exception as exc:
        raise TransportError(f"{name} failed: {type(exc).__name__}: {exc}") from exc
