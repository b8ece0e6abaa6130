"""The gateway's version, from one place: pyproject.toml's `version`, as installed
(importlib.metadata), or read from the checkout when the package runs from source uninstalled."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "voice-sms-gateway"


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    checkout = Path(__file__).resolve().parents[1]
    try:
        project = tomllib.loads((checkout / "pyproject.toml").read_text())["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return "unknown"
    return str(project["version"]) if project.get("name") == DISTRIBUTION else "unknown"
