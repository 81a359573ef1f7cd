"""The one interface every transport implements, and the settings every connection shares.

A connection is modelled the way impact's Connector wizard models it: a name, a direction,
a data type, a method and a methodology. A transport only has to ``put`` one finished file;
retries, timeouts and acknowledgement live in the delivery layer, not in each transport.
"""
from __future__ import annotations

import abc
import ftplib
import secrets
import smtplib
import ssl
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
        TransportError naming the failing step. ``imref-stream check`` calls it, and the worker once
        at start-up (a configuration error shows before a batch is held by it); a transport does
        no I/O for it on its own, nor before its first ``put``."""
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


def configuration_problem(exc: BaseException) -> str | None:
    """What in the connection's configuration (or the server's) a failure shows to be wrong, or None
    for a failure a later attempt may not meet (a timeout, a reset, a refused or lost connection).
    A configuration problem does not go away by waiting: someone has to fix it, and until then the
    connection's batches are held (they are still retried, so a fix needs no restart)."""
    import paramiko  # here, not at the top: the FTP and email transports do not need it

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, paramiko.BadHostKeyException):
            return "host key differs from the one in known_hosts"
        if isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
            return "host key not in known_hosts"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return "certificate not trusted"
        if isinstance(exc, (paramiko.AuthenticationException, smtplib.SMTPAuthenticationError)):
            return "login refused"
        if isinstance(exc, ftplib.error_perm):
            code = str(exc)[:3]
            return "login refused" if code == "530" else "folder missing or not writable" if code == "550" else None
        if isinstance(exc, (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused)):
            return "address refused"
        if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
            return "folder missing"
        if isinstance(exc, PermissionError):
            return "permission denied"
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def step(name: str) -> Iterator[None]:
    try:
        yield
    except TransportError:
        raise
    except Exception as exc:
        raise TransportError(f"{name} failed: {type(exc).__name__}: {exc}") from exc
