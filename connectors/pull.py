"""Pull from impact: list the files impact leaves on its SFTP server and read them as streams.

The session is ``SftpConnection.session()``, so the host key is pinned exactly as for uploads
(known_hosts, RejectPolicy). Blocking: callers run these methods in a worker thread.
"""
from __future__ import annotations

import io
import posixpath
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import paramiko

from .base import step
from .sftp import SftpConnection, SftpSettings, to_fetch

# paramiko's prefetch asks for the whole file at once and keeps every answer that arrives before
# it is read: a fast server and a slow reader put the whole file in memory. Reading ahead one
# window at a time (readv) bounds that, at the cost of one round trip per window.
WINDOW = 8 * 1024 * 1024
BUFFER = 1024 * 1024


@dataclass(frozen=True, order=True)
class RemoteFile:
    name: str
    size: int
    mtime: int


class SftpSource:
    """One SSH session for one poll: ``list`` the matching files, then ``open`` them one by one."""

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
                      if to_fetch(e, s.file_pattern))

    @contextmanager
    def open(self, file: RemoteFile) -> Iterator[BinaryIO]:
        """The file's bytes as a buffered stream; a failed read raises TransportError("download ...")."""
        with step("download"):
            remote = self._sftp.open(posixpath.join(self.settings.directory, file.name), "rb")
        with remote, io.BufferedReader(_WindowedReader(remote, file), BUFFER) as stream:
            yield stream


class _WindowedReader(io.RawIOBase):
    """Reads ``file`` front to back, at most WINDOW bytes requested ahead of the reader."""

    def __init__(self, remote: paramiko.SFTPFile, file: RemoteFile):
        self._blocks = self._read_blocks(remote, file)
        self._block = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._block:
            with step("download"):
                block = next(self._blocks, None)
            if block is None:
                return 0
            self._block = memoryview(block)
        n = min(len(buffer), len(self._block))
        buffer[:n], self._block = self._block[:n], self._block[n:]
        return n

    @staticmethod
    def _read_blocks(remote: paramiko.SFTPFile, file: RemoteFile) -> Iterator[bytes]:
        chunk = remote.MAX_REQUEST_SIZE
        for start in range(0, file.size, WINDOW):
            end = min(start + WINDOW, file.size)
            spans = [(offset, min(chunk, end - offset)) for offset in range(start, end, chunk)]
            for (_, length), block in zip(spans, remote.readv(spans)):
                if len(block) != length:
                    raise OSError(f"{file.name} is shorter than the {file.size} bytes listed")
                yield block
        remote.seek(file.size)
        if remote.read(1):
            # Listed as stable, yet it changed: take it on a later poll, once stable again.
            raise OSError(f"{file.name} is longer than the {file.size} bytes listed")
