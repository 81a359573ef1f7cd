"""Secrets are referenced by config, never written in it: a file (a mounted Kubernetes Secret)
or an environment variable. The value is read at start-up so a missing secret stops it."""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator


class SecretRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> "SecretRef":
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        if self.env is not None and not os.environ.get(self.env):
            raise ValueError(f"environment variable {self.env} is not set")
        if self.file is not None and not self.file.is_file():
            raise ValueError(f"secret file {self.file} does not exist")
        return self

    def reveal(self) -> SecretStr:
        if self.env is not None:
            return SecretStr(os.environ[self.env])
        return SecretStr(self.file.read_text().rstrip("\n"))

    def __repr__(self) -> str:
        return f"SecretRef(env={self.env!r})" if self.env else f"SecretRef(file='{self.file}')"
