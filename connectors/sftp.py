"""SFTP with paramiko: push to impact's SFTP, or into a partner server impact pulls from.

The server's host key must be in the configured known_hosts file: an unknown or changed key
is refused (RejectPolicy), never added. The file is written under a temporary name and
renamed, so no reader ever sees a partial file under the final name.
Pull from impact (list and download with the same session) is in ``connectors.pull``.
"""
from __future__ import annotations

import fnmatch
import io
import posixpath
import stat
from pathlib import Path
from typing import Literal

import paramiko
from pydantic import Field, model_validator

from .base import Connection, ConnectionSettings, probe_folder, step
from .credentials import SecretRef
from .fsspec_dir import FsspecSettings, StorageOptions, storage_options_field

_KEY_TYPES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


class SftpSettings(ConnectionSettings):
    method: Literal["sftp"] = Field(description="SSH file transfer; host key pinned in known_hosts.")
    methodology: Literal["push_to_impact", "pull_from_3rd_party", "pull_from_impact"] = "push_to_impact"
    host: str
    port: int = Field(22, ge=1, le=65535)
    username: str
    password: SecretRef | None = Field(None, description="Password authentication.")
    private_key: SecretRef | None = Field(None, description="Key authentication: the private key in OpenSSH/PEM form.")
    known_hosts: Path = Field(description="known_hosts file holding the server's host key (mounted from a Secret).")
    directory: str = Field(".", description="Remote directory of the files.")
    file_pattern: str | None = Field(
        None, description="pull_from_impact: names to fetch, a glob such as `Performance_Bonus_Detail_*.csv`.")
    poll_interval_s: float = Field(60.0, gt=0, description="pull_from_impact: how often the directory is listed.")
    target_topic: str | None = Field(None, description="pull_from_impact: publish each row to this Kafka topic …")
    target_url: str | None = Field(None, description="… or store each file in this fsspec directory URL.")
    storage_options: StorageOptions = storage_options_field("pull_from_impact: for `target_url`.")

    @model_validator(mode="after")
    def _credentials(self) -> "SftpSettings":
        if not (self.password or self.private_key):
            raise ValueError("give password or private_key")
        if not self.known_hosts.is_file():
            raise ValueError(f"known_hosts file {self.known_hosts} does not exist")
        return self

    @model_validator(mode="after")
    def _pull_fields(self) -> "SftpSettings":
        pull_keys = ("file_pattern", "poll_interval_s", "target_topic", "target_url", "storage_options")
        if self.methodology != "pull_from_impact":
            wrong = [k for k in pull_keys if k in self.model_fields_set]
            if wrong:
                raise ValueError(f"{', '.join(wrong)}: only for methodology pull_from_impact")
            return self
        if self.data_type not in ("reports", "performance_bonus_detail"):
            raise ValueError("data_type: impact offers reports or performance_bonus_detail to pull")
        if not self.file_pattern:
            raise ValueError("file_pattern: required with methodology pull_from_impact")
        if "/" in self.file_pattern:
            raise ValueError("file_pattern: a file name pattern; the folder goes into directory")
        if (self.target_topic is None) == (self.target_url is None):
            raise ValueError("target_topic, target_url: give exactly one (where the fetched files go)")
        if self.storage_options and self.target_url is None:
            raise ValueError("storage_options: only with target_url")
        if self.target_url is not None:
            try:
                FsspecSettings._known_protocol(self.target_url)  # the same URL rule as method fsspec
            except ValueError as exc:
                raise ValueError(f"target_url: {exc}") from None
        return self


def to_fetch(entry: paramiko.SFTPAttributes, pattern: str) -> bool:
    """A listed entry that pull from impact fetches: a regular file whose name matches."""
    return stat.S_ISREG(entry.st_mode or 0) and fnmatch.fnmatchcase(entry.filename, pattern)


def load_private_key(text: str) -> paramiko.PKey:
    for key_type in _KEY_TYPES:
        try:
            return key_type.from_private_key(io.StringIO(text))
        except paramiko.SSHException:
            continue
    raise ValueError("private_key is not an Ed25519, ECDSA or RSA private key")


class SftpConnection(Connection):
    settings: SftpSettings

    def put(self, name: str, data: bytes) -> None:
        final = posixpath.join(self.settings.directory, name)
        temp = posixpath.join(self.settings.directory, f".{name}.part")
        with self.session() as sftp:
            with step("upload"):
                with sftp.open(temp, "wb") as remote:
                    remote.set_pipelined(True)
                    remote.write(data)
                if sftp.stat(temp).st_size != len(data):
                    raise OSError("size on the server differs from the file sent")
            with step("rename"):
                sftp.posix_rename(temp, final)  # replaces an earlier copy atomically

    def probe(self) -> str:
        s = self.settings
        done = f"logged in to {s.host}:{s.port}, host key matches {s.known_hosts}"
        with self.session() as sftp:
            if s.methodology == "pull_from_impact":
                with step("list"):
                    files = [e for e in sftp.listdir_attr(s.directory) if to_fetch(e, s.file_pattern)]
                return done + f"; {len(files)} file(s) in {s.directory} match {s.file_pattern}"
            if s.methodology != "pull_from_3rd_party":
                with step("open directory"):
                    sftp.stat(s.directory)
                return done + f"; {s.directory} exists, nothing written"

            def path(name: str) -> str:
                return posixpath.join(s.directory, name)

            return done + f"; {s.directory} " + probe_folder(
                write=lambda name: sftp.open(path(name), "wb").close(),
                rename=lambda a, b: sftp.posix_rename(path(a), path(b)), remove=lambda name: sftp.remove(path(name)))

    def session(self) -> paramiko.SFTPClient:
        """An SFTP session whose SSH client closes with it."""
        s = self.settings
        client = paramiko.SSHClient()
        client.load_host_keys(str(s.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        with step("connect"):
            client.connect(s.host, s.port, username=s.username,
                           password=s.password.reveal().get_secret_value() if s.password else None,
                           pkey=load_private_key(s.private_key.reveal().get_secret_value()) if s.private_key else None,
                           timeout=s.timeout_s, banner_timeout=s.timeout_s, auth_timeout=s.timeout_s,
                           allow_agent=False, look_for_keys=False)
        try:
            with step("open sftp"):
                sftp = client.open_sftp()
        except BaseException:
            client.close()
            raise
        sftp.get_channel().settimeout(s.timeout_s)
        original_close = sftp.close
        sftp.close = lambda: (original_close(), client.close())  # one close for both
        return sftp
