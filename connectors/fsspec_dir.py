"""Pull from 3rd party: a directory impact pulls from, at any fsspec URL (local by default)."""
from __future__ import annotations

import posixpath
from typing import Any, Literal

import fsspec
from pydantic import Field, field_validator

from streams import faults

from .base import Connection, ConnectionSettings


class FsspecSettings(ConnectionSettings):
    method: Literal["fsspec"] = Field(description="Write into a directory impact pulls from.")
    methodology: Literal["pull_from_3rd_party"] = "pull_from_3rd_party"
    url: str = Field(description="Directory URL, e.g. file:///var/impact/outbox or s3://bucket/impact/")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="Non-secret fsspec options.")

    @field_validator("url")
    @classmethod
    def _known_protocol(cls, url: str) -> str:
        protocol = fsspec.core.split_protocol(url)[0] or "file"
        if protocol in ("sftp", "ssh"):
            # fsspec's SFTP backend trusts any host key (AutoAddPolicy): use method sftp instead.
            raise ValueError("sftp:// is not allowed here; use a connection with method: sftp")
        fsspec.get_filesystem_class(protocol)
        return url


class FsspecConnection(Connection):
    settings: FsspecSettings

    def __init__(self, settings: FsspecSettings):
        super().__init__(settings)
        self.fs, self.root = fsspec.core.url_to_fs(settings.url, **settings.storage_options)
        self.fs.makedirs(self.root, exist_ok=True)

    def put(self, name: str, data: bytes) -> None:
        # A reader polling the directory must never see a partial file under its final name.
        final = posixpath.join(self.root, name)
        temp = posixpath.join(self.root, f".{name}.part")
        self.fs.pipe_file(temp, data)
        faults.point("mid_upload")
        self.fs.mv(temp, final)
