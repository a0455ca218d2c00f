"""Structured logs: one JSON object per line in the state directory, key=value lines on stderr.

Every line passes through a redactor that blanks any secret's value, so a
secret that slips into a message or an exception text never reaches a log.
"""
from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from .config import Config, Secrets

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and k not in ("message", "asctime")}


class _Redacting(logging.Formatter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class JsonFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self.redact(msgspec.json.encode(entry, enc_hook=str).decode())


class TextFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}" + (f" {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self.redact(line)


def setup(config: Config, name: str, secrets: Secrets, stream: Any = None) -> logging.Logger:
    """Log ``name`` to ``<state>/logs/<name>.log`` (JSON lines, rotated) and to stderr (text)."""
    logger = logging.getLogger(name)
    logger.setLevel(config.log.level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    path = Path(config.state_dir) / "logs" / f"{name}.log"
    to_file = logging.handlers.RotatingFileHandler(
        path, maxBytes=config.log.file_max_mb * 1024 * 1024, backupCount=config.log.file_backups
    )
    to_file.setFormatter(JsonFormatter(secrets.values()))
    to_err = logging.StreamHandler(stream or sys.stderr)
    to_err.setFormatter(TextFormatter(secrets.values()))
    logger.addHandler(to_file)
    logger.addHandler(to_err)
    return logger
