"""The embedding server's log lines are JSON objects."""

from __future__ import annotations

import json
import logging
import sys

from embedding.logs import JsonFormatter


def test_a_line_is_one_json_object_with_the_exception_when_there_is_one():
    formatter = JsonFormatter()
    record = logging.LogRecord("embedding.server", logging.INFO, __file__, 1,
                               "lookup :%d", (8500,), None)
    line = json.loads(formatter.format(record))
    assert line["message"] == "lookup :8500" and line["level"] == "info"
    assert line["logger"] == "embedding.server" and line["time"].endswith("+00:00")
    try:
        raise ValueError("bad row")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "ValueError: bad row" in json.loads(formatter.format(record))["exception"]
