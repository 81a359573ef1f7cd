"""Pull from 3rd party: a directory impact pulls from, at any fsspec URL (local by default)."""
from __future__ import annotations

import io
import posixpath
import re
import shutil
import threading
from typing import Annotated, Any, BinaryIO, Literal

import fsspec
from pydantic import AfterValidator, Field, field_validator

from . import faults
from .base import Connection, ConnectionSettings, probe_folder, step

CHUNK = 1024 * 1024
# Names under which fsspec backends take credentials (s3fs key/secret, adlfs account_key, ...).
_CREDENTIAL = re.compile(r"^key$|secret|passw|credential|account_key|sas_token|session_token|connection_string", re.I)


def _no_credentials(options: dict[str, Any], where: str = "") -> dict[str, Any]:
    # The config is a ConfigMap: credentials come from the backend's own environment or files
    # (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*, a workload identity), never from here.
    for name, value in options.items():
        if _CREDENTIAL.search(str(name)):
            raise ValueError(f"{where}{name}: a credential; give it to the backend through its environment")
        if isinstance(value, dict):
            _no_credentials(value, f"{where}{name}.")
    return options


StorageOptions = Annotated[dict[str, Any], AfterValidator(_no_credentials)]


def storage_options_field(description: str):
    return Field(default_factory=dict, description=description + " Non-secret fsspec options, e.g. "
                 "`{endpoint_url: ..., client_kwargs: {region_name: ...}}`; credentials come from the backend's "
                 "environment.")


class FsspecSettings(ConnectionSettings):
    method: Literal["fsspec"] = Field(description="Write into a directory impact pulls from.")
    methodology: Literal["pull_from_3rd_party"] = "pull_from_3rd_party"
    url: str = Field(description="Directory URL, e.g. file:///var/impact/outbox or s3://bucket/impact/")
    storage_options: StorageOptions = storage_options_field("For `url`.")

    @field_validator("url")
    @classmethod
    def _known_protocol(cls, url: str) -> str:
        protocol = fsspec.core.split_protocol(url)[0] or "file"
        if protocol in ("sftp", "ssh"):
            # fsspec's SFTP backend trusts any host key (AutoAddPolicy): use method sftp instead.
            raise ValueError("sftp:// is not allowed here; use a connection with method: sftp")
        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError as exc:  # the backend's package is not installed: say which one
            raise ValueError(f"{protocol}:// needs a package this installation lacks: {exc}") from None
        return url


class FsspecConnection(Connection):
    settings: FsspecSettings

    def __init__(self, settings: FsspecSettings):
        super().__init__(settings)
        # No I/O here: some backends connect as their filesystem is made (ftp://), and a store that
        # is down when the worker starts must hold its batches and retry, not stop the worker.
        self._fs: fsspec.AbstractFileSystem | None = None
        self.root = ""  # the folder's path in the filesystem, known once it is made
        # One transfer at a time: the partitions' lanes upload from threads, and not every backend
        # is safe for that (ftp:// shares one control connection: concurrent uploads read each
        # other's replies, "error_reply: 200 Type set to: Binary", and hang until a data timeout).
        self._one_at_a_time = threading.Lock()

    def _filesystem(self) -> fsspec.AbstractFileSystem:
        """The filesystem, made (and the folder created) by the first transfer that needs it, and
        again by the next one after a failure: a backend's session can be dead after an outage."""
        if self._fs is None:
            fs, root = fsspec.core.url_to_fs(self.settings.url, skip_instance_cache=True,
                                            **self.settings.storage_options)
            fs.makedirs(root, exist_ok=True)
            self._fs, self.root = fs, root
        return self._fs

    def put(self, name: str, data: bytes) -> None:
        self.put_stream(name, io.BytesIO(data))

    def probe(self) -> str:
        with self._one_at_a_time:
            return self._probe()

    def _probe(self) -> str:
        with step("open folder"):
            fs = self._filesystem()

        def path(name: str) -> str:
            return posixpath.join(self.root, name)

        return f"{self.settings.url} " + probe_folder(
            write=lambda name: fs.pipe_file(path(name), b""),
            rename=lambda a, b: fs.mv(path(a), path(b)), remove=lambda name: fs.rm_file(path(name)))

    def put_stream(self, name: str, source: BinaryIO) -> None:
        """Copy ``source`` in chunks: a file of any size needs one chunk of memory."""
        with self._one_at_a_time:
            self._put_stream(name, source)

    def _put_stream(self, name: str, source: BinaryIO) -> None:
        try:
            fs = self._filesystem()
            # A reader polling the directory must never see a partial file under its final name.
            final = posixpath.join(self.root, name)
            temp = posixpath.join(self.root, f".{name}.part")
            with fs.open(temp, "wb") as target:
                shutil.copyfileobj(source, target, CHUNK)
            faults.point("mid_upload")
            fs.mv(temp, final)
        except Exception:
            self._fs = None
            raise
