import logging
import sys

import orjson

from streams.logs import JsonFormatter, logging_config


def test_a_record_with_a_traceback_is_one_json_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("streams.delivery", logging.WARNING, __file__, 1, "upload failed: %s", ("x",),
                                   sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "streams.delivery"
    assert entry["message"] == "upload failed: x" and entry["time"].endswith("+00:00")
    assert entry["exception"].startswith("Traceback") and "ValueError: boom" in entry["exception"]


def test_text_keeps_fausts_own_logging():
    assert logging_config("text", "info") is None
    assert logging_config("json", "info")["root"]["level"] == "INFO"
