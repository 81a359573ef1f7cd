"""Real servers on free loopback ports for the connector tests: pyftpdlib (FTP, FTPS),
asyncssh (SFTP, password and key auth, pinned host key), aiosmtpd (SMTP with STARTTLS).
Each runs in a thread of the test process and stops when its context ends."""
from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import DTPHandler, FTPHandler, TLS_DTPHandler, TLS_FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from streams.tools.devbroker import free_port

USER, PASSWORD = "retailer", "s3cret-pass-0042"

# The serve loop below restarts pyftpdlib's non-blocking serve_forever every 50 ms, which logs
# a start banner each time unless a handler exists; sessions are logged at INFO only.
logging.getLogger("pyftpdlib").addHandler(logging.NullHandler())
logging.getLogger("pyftpdlib").setLevel(logging.WARNING)


@dataclass
class Certs:
    ca_file: Path  # what a client trusts
    server_pem: Path  # server key + chain
    ca: trustme.CA

    @classmethod
    def make(cls, folder: Path, name: str = "test") -> "Certs":
        folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ca_file, server_pem = folder / f"{name}-ca.pem", folder / f"{name}-server.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        cert.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
        return cls(ca_file, server_pem, ca)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.server_pem))
        return ctx


class FtpServer:
    """pyftpdlib; ``tls`` requires TLS on control and data; ``drop_uploads`` aborts that many
    uploads after ``drop_after`` bytes (a connection reset in the middle of an upload; raise it
    at any time for more); ``down()`` closes the port and every session until ``up()``.
    ``received`` lists the name of every upload the server completed, in order: for a push to
    impact each one is a submission."""

    def __init__(self, root: Path, certs: Certs | None = None, drop_uploads: int = 0, drop_after: int = 2048,
                 perm: str = "elradfmwMT"):
        """``perm``: pyftpdlib's permission letters for the user ("elr": read only)."""
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.port = root, free_port()
        self.commands: list[str] = []
        self.received: list[str] = []
        auth = DummyAuthorizer()
        auth.add_user(USER, PASSWORD, str(root), perm=perm)
        self.drop_uploads = drop_uploads
        owner = self

        class Dropping(TLS_DTPHandler if certs else DTPHandler):
            def handle_read_event(self):  # pyftpdlib dispatches reads here, TLS ones included
                super().handle_read_event()
                if self.receive and owner.drop_uploads > 0 and self.tot_bytes_received >= drop_after:
                    owner.drop_uploads -= 1
                    self.close()

        commands, received = self.commands, self.received

        class Handler(TLS_FTPHandler if certs else FTPHandler):
            def pre_process_command(self, line, cmd, arg):
                commands.append(cmd)
                return super().pre_process_command(line, cmd, arg)

            def on_file_received(self, file):
                received.append(Path(file).name)

        Handler.authorizer, Handler.dtp_handler = auth, Dropping
        if certs:
            Handler.certfile = str(certs.server_pem)
            Handler.tls_control_required = Handler.tls_data_required = True
        self._handler = Handler
        self._server = self._listen()
        self._stop, self._down = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _listen(self) -> FTPServer:
        # A loop of its own, new each time (closing a server closes its loop): pyftpdlib's default
        # is one per process, and two servers serving it from two threads corrupt each other's TLS
        # sessions and crash the process.
        return FTPServer(("127.0.0.1", self.port), self._handler, ioloop=IOLoop())

    def down(self) -> None:
        self._down.set()

    def up(self) -> None:
        self._down.clear()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if self._down.is_set():
                self._server.close_all()  # the listener and every session: connection refused/reset
                while self._down.is_set() and not self._stop.is_set():
                    time.sleep(0.05)
                self._server = self._listen()
            self._server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        self._server.close_all()

    def __enter__(self) -> "FtpServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


class SftpServer:
    """asyncssh SFTP server rooted at ``root``; password and key auth; its host key is written
    to ``known_hosts`` the way an operator pins it."""

    def __init__(self, root: Path, known_hosts: Path, client_public_key: str):
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.known_hosts, self.port = root, known_hosts, free_port()
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._authorized = asyncssh.import_authorized_keys(client_public_key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None

    def pin(self, key: asyncssh.SSHKey | None = None) -> None:
        line = (key or self.host_key).export_public_key().decode().strip()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {line}\n")

    def __enter__(self) -> "SftpServer":
        root = str(self.root)

        class Server(asyncssh.SSHServer):
            def begin_auth(self, username):
                return True

            def password_auth_supported(self):
                return True

            def validate_password(self, username, password):
                return username == USER and password == PASSWORD

        async def start():
            return await asyncssh.listen("127.0.0.1", self.port, server_factory=Server,
                                         server_host_keys=[self.host_key], authorized_client_keys=self._authorized,
                                         sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root),
                                         allow_scp=False)

        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        self.pin()
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class SmtpServer:
    """aiosmtpd that requires STARTTLS and a login, and keeps every message it accepts."""

    def __init__(self, certs: Certs):
        self.messages: list = []
        self.port = free_port()
        messages = self.messages

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                messages.append(envelope)
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == \
                (USER.encode(), PASSWORD.encode())
            return AuthResult(success=ok)

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                      tls_context=certs.server_context(), require_starttls=True,
                                      authenticator=authenticator, auth_required=True)

    def __enter__(self) -> "SmtpServer":
        self._controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self._controller.stop()
