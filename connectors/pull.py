"""Pull from impact: list and download the files impact leaves on its SFTP server.

The session is ``SftpConnection.session()``, so the host key is pinned exactly as for uploads
(known_hosts, RejectPolicy). Blocking: callers run these methods in a worker thread.
"""
from __future__ import annotations

import fnmatch
import posixpath
import stat
from dataclasses import dataclass

import paramiko

from .base import step
from .sftp import SftpConnection, SftpSettings


@dataclass(frozen=True, order=True)
class RemoteFile:
    name: str
    size: int
    mtime: int


class SftpSource:
    """One SSH session for one poll: ``list`` the matching files, then ``download`` them."""

    def __init__(self, settings: SftpSettings):
        self.settings = settings
        self._sftp: paramiko.SFTPClient | None = None

    def __enter__(self) -> "SftpSource":
        self._sftp = SftpConnection(self.settings).session()
        return self

    def __exit__(self, *exc) -> None:
        self._sftp.close()

    def list(self) -> list[RemoteFile]:
        s = self.settings
        with step("list"):
            entries = self._sftp.listdir_attr(s.directory)
        return sorted(RemoteFile(e.filename, e.st_size or 0, e.st_mtime or 0) for e in entries
                      if stat.S_ISREG(e.st_mode or 0) and fnmatch.fnmatchcase(e.filename, s.file_pattern))

    def download(self, file: RemoteFile) -> bytes:
        with step("download"):
            with self._sftp.open(posixpath.join(self.settings.directory, file.name), "rb") as remote:
                remote.prefetch(file.size)
                data = remote.read()
            if len(data) != file.size:
                # Listed as stable, yet it changed: take it on a later poll, once stable again.
                raise OSError(f"{file.name} is {len(data)} bytes now, listed with {file.size}")
        return data
