"""FTP and FTPS: push to impact (``batch.impact.com:21``) or into a partner FTP server impact pulls from.

impact's server forbids listing and processes what arrives, so a push is exactly one STOR of
the whole file into the current (or configured) directory. Into a partner server the file is
stored under a temporary name and renamed, so impact never picks up a partial file.
"""
from __future__ import annotations

import ftplib
import io
import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .base import Connection, ConnectionSettings, probe_folder, step
from .credentials import SecretRef


class FtpSettings(ConnectionSettings):
    method: Literal["ftp", "ftps"] = Field(description="`ftps`: explicit TLS, verified, data channel protected.")
    methodology: Literal["push_to_impact", "pull_from_3rd_party"] = "push_to_impact"
    host: str = Field("batch.impact.com", description="Server name; also the name its certificate must carry.")
    port: int = Field(21, ge=1, le=65535)
    username: str
    password: SecretRef
    directory: str | None = Field(None, description="Change to it first; impact FTP: leave unset.")
    ca_file: Path | None = Field(None, description="CA bundle for the server certificate; system CAs when unset.")
    allow_plaintext: bool = Field(False, description="Required for method `ftp`: password and data in clear text.")

    @model_validator(mode="after")
    def _tls_is_explicit(self) -> "FtpSettings":
        if self.method == "ftp" and not self.allow_plaintext:
            raise ValueError("method ftp sends the password in clear text: use ftps, or set allow_plaintext: true")
        if self.method == "ftps" and self.allow_plaintext:
            raise ValueError("allow_plaintext contradicts method ftps")
        if self.method == "ftp" and self.ca_file:
            raise ValueError("ca_file needs method ftps")
        return self


class _Passive:
    """EPSV first: the server answers with a port only and the client keeps the control
    connection's address, which survives NAT and Kubernetes networking; PASV if refused."""

    def makepasv(self):
        try:
            return ftplib.parse229(self.sendcmd("EPSV"), self.sock.getpeername())
        except ftplib.error_perm:
            return super().makepasv()


class _FTP(_Passive, ftplib.FTP):
    pass


class _FTPS(_Passive, ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        # Reuse the control channel's TLS session on the data channel: servers such as vsftpd
        # (require_ssl_reuse) refuse data connections that do not.
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=self.sock.session)
        return conn, size


class FtpConnection(Connection):
    settings: FtpSettings

    def put(self, name: str, data: bytes) -> None:
        s = self.settings
        with self._session() as ftp:
            if s.methodology == "pull_from_3rd_party":
                temp = f".{name}.part"
                with step("upload"):
                    ftp.storbinary(f"STOR {temp}", io.BytesIO(data))
                with step("rename"):
                    ftp.rename(temp, name)
            else:
                with step("upload"):
                    ftp.storbinary(f"STOR {name}", io.BytesIO(data))

    def probe(self) -> str:
        s = self.settings
        with self._session() as ftp:
            done = f"logged in to {s.host}:{s.port}" + (" over verified TLS" if s.method == "ftps" else " (plain FTP)")
            if s.methodology != "pull_from_3rd_party":
                # impact processes whatever arrives and forbids listing: nothing to test without a file
                return done + "; nothing written"
            return done + f"; {s.directory or 'the login folder'} " + probe_folder(
                write=lambda name: ftp.storbinary(f"STOR {name}", io.BytesIO(b"")),
                rename=ftp.rename, remove=ftp.delete)

    def _session(self) -> ftplib.FTP:
        s = self.settings
        if s.method == "ftps":
            # create_default_context: certificate and host name verified (ftplib's default is not).
            context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
            ftp = _FTPS(context=context, timeout=s.timeout_s)
        else:
            ftp = _FTP(timeout=s.timeout_s)
        with step("connect"):
            ftp.connect(s.host, s.port)
        try:
            with step("login"):
                ftp.login(s.username, s.password.reveal().get_secret_value())
                if s.method == "ftps":
                    ftp.prot_p()
            if s.directory:
                with step("change directory"):
                    ftp.cwd(s.directory)
        except BaseException:
            ftp.close()
            raise
        return ftp
