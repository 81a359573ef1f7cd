"""JSON log lines for log pipelines (``logging.format: json``): one object a line, so a record with
a traceback stays one record."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(fmt: str, loglevel: str) -> dict | None:
    """A ``logging.config.dictConfig`` for the worker; None keeps Faust's own text lines."""
    if fmt != "json":
        return None
    level = loglevel.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json", "level": level,
                                 "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["default"]},
    }
