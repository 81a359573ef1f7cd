"""Email: the CSV as an attachment to the one address impact assigned (impact reads only the
first recipient, so exactly one is allowed). SMTP with verified STARTTLS or implicit TLS.

A mail cannot be overwritten: a retry after a lost server answer can send it twice; the
attachment name is the batch's stable file name, so impact sees the same file again."""
from __future__ import annotations

import smtplib
import ssl
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator, Literal

from pydantic import Field, field_validator, model_validator

from .base import Connection, ConnectionSettings, step
from .credentials import SecretRef

_ADDRESS = r"^[^@\s,;<>]+@[^@\s,;<>]+\.[A-Za-z]{2,}$"


class EmailSettings(ConnectionSettings):
    method: Literal["email"] = Field(description="CSV attached to a mail to impact's assigned address.")
    methodology: Literal["push_to_impact"] = "push_to_impact"
    host: str = Field(description="SMTP server.")
    port: int = Field(587, ge=1, le=65535)
    tls: Literal["starttls", "implicit"] = Field("starttls", description="STARTTLS (587) or implicit TLS (465).")
    ca_file: Path | None = Field(None, description="CA bundle for the SMTP server; system CAs when unset.")
    sender: str = Field(pattern=_ADDRESS, description="From address.")
    to: str = Field(description="The one impact address from the Tech Plan.")
    subject: str = Field("impact conversions {file}", description="`{file}` is replaced by the file name.")
    username: str | None = None
    password: SecretRef | None = None

    @field_validator("to")
    @classmethod
    def _exactly_one_recipient(cls, to: str) -> str:
        import re

        if not re.fullmatch(_ADDRESS, to.strip()):
            raise ValueError("give exactly one address: impact reads only the first recipient")
        return to.strip()

    @model_validator(mode="after")
    def _login_complete(self) -> "EmailSettings":
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class EmailConnection(Connection):
    settings: EmailSettings

    def put(self, name: str, data: bytes) -> None:
        s = self.settings
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = s.sender, s.to, s.subject.format(file=name)
        msg.set_content(f"impact conversion batch {name} attached.\n")
        msg.add_attachment(data, maintype="text", subtype="csv", filename=name)
        with self._session() as smtp:
            with step("send"):
                refused = smtp.send_message(msg, from_addr=s.sender, to_addrs=[s.to])
                if refused:
                    raise smtplib.SMTPRecipientsRefused(refused)

    def probe(self) -> str:
        s = self.settings
        with self._session() as smtp:
            # The envelope without DATA: the server says whether it takes the addresses, and
            # RSET drops the transaction, so no mail is sent.
            with step("recipient"):
                for code, answer in (smtp.mail(s.sender), smtp.rcpt(s.to)):
                    if code not in (250, 251):
                        raise smtplib.SMTPResponseException(code, answer)
                smtp.rset()
        login = "logged in" if s.username else "connected"
        return f"{login} to {s.host}:{s.port} over verified TLS; {s.to} accepted from {s.sender}, no mail sent"

    @contextmanager
    def _session(self) -> Iterator[smtplib.SMTP]:
        s = self.settings
        context = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        with step("connect"):
            smtp = (smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=context) if s.tls == "implicit"
                    else smtplib.SMTP(s.host, s.port, timeout=s.timeout_s))
        with smtp:
            if s.tls == "starttls":
                with step("starttls"):
                    smtp.starttls(context=context)
            if s.username:
                with step("login"):
                    smtp.login(s.username, s.password.reveal().get_secret_value())
            yield smtp
