"""Connections: where finished impact batch files go. One module per transport."""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from .base import Connection, ConnectionSettings
from .email import EmailConnection, EmailSettings
from .fsspec_dir import FsspecConnection, FsspecSettings
from .ftp import FtpConnection, FtpSettings
from .sftp import SftpConnection, SftpSettings

# method -> (settings model, transport class); a new transport registers itself here only.
TRANSPORTS: dict[str, tuple[type[ConnectionSettings], type[Connection]]] = {
    "ftp": (FtpSettings, FtpConnection),
    "ftps": (FtpSettings, FtpConnection),
    "sftp": (SftpSettings, SftpConnection),
    "email": (EmailSettings, EmailConnection),
    "fsspec": (FsspecSettings, FsspecConnection),
}

AnyConnectionSettings = Annotated[
    Union[tuple(dict.fromkeys(settings for settings, _ in TRANSPORTS.values()))],  # type: ignore[valid-type]
    Field(discriminator="method"),
]


def build_connection(settings: ConnectionSettings) -> Connection:
    return TRANSPORTS[settings.method][1](settings)  # type: ignore[attr-defined]


__all__ = ["AnyConnectionSettings", "Connection", "ConnectionSettings", "TRANSPORTS", "build_connection"]
