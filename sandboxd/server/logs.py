"""Log lines journald keeps whole: one line per record, a syslog priority prefix, then ``key=value`` pairs.

``<6>level=info logger=sandboxd.service msg="refused Execute for 'bob' (RATE_LIMITED): …"`` — journald
reads the ``<N>`` prefix as the priority (``SyslogLevelPrefix=`` defaults to yes) and strips it; newlines
inside a message or a traceback are escaped so one record never becomes several journal entries.
"""

from __future__ import annotations

import json
import logging
from typing import TextIO

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class LogfmtFormatter(logging.Formatter):
    def __init__(self, *, syslog_prefix: bool = True) -> None:
        super().__init__()
        self._syslog_prefix = syslog_prefix

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        priority = _PRIORITY.get(record.levelno, 6)
        # json.dumps quotes and escapes (\n, \", non-printables) in one well-known way
        line = f"level={record.levelname.lower()} logger={record.name} msg={json.dumps(message, ensure_ascii=False)}"
        return f"<{priority}>{line}" if self._syslog_prefix else line


def configure_logging(level: str, stream: TextIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogfmtFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
