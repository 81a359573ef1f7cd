"""Connections: where finished impact batch files go. One module per transport."""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from .base import Connection, ConnectionSettings
from .fsspec_dir import FsspecConnection, FsspecSettings

# method -> (settings model, transport class); a new transport registers itself here only.
TRANSPORTS: dict[str, tuple[type[ConnectionSettings], type[Connection]]] = {
    "fsspec": (FsspecSettings, FsspecConnection),
}

AnyConnectionSettings = Annotated[
    Union[tuple(settings for settings, _ in TRANSPORTS.values())],  # type: ignore[valid-type]
    Field(discriminator="method"),
]


def build_connection(settings: ConnectionSettings) -> Connection:
    return TRANSPORTS[settings.method][1](settings)  # type: ignore[attr-defined]


__all__ = ["AnyConnectionSettings", "Connection", "ConnectionSettings", "TRANSPORTS", "build_connection"]
