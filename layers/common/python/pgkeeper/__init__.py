"""pgkeeper: serverless maintenance for production PostgreSQL."""

from __future__ import annotations

import json
import platform
from pathlib import Path

__version__ = "0.1.0"

BUILD_FILE = Path(__file__).with_name("BUILD.json")
"""Written into the layer by its build: {"architecture": "arm64"|"x86_64", "python": "3.13"}."""
MACHINES = {"arm64": "aarch64", "x86_64": "x86_64"}


def check_build(machine: str | None = None) -> None:
    """A layer's compiled wheels load on one CPU only. On a function of the other architecture every
    cold start would fail deep in an import with a loader error; fail first, in one line saying what
    to rebuild or redeploy. No BUILD.json (the source tree): nothing to check."""
    if not BUILD_FILE.is_file():
        return
    built = json.loads(BUILD_FILE.read_text())["architecture"]
    machine = machine or platform.machine()
    if MACHINES.get(built) != machine:
        runs = {v: k for k, v in MACHINES.items()}.get(machine, machine)
        from .errors import ConfigError

        raise ConfigError(f"this layer was built for {built} but the function runs on {runs}: deploy the build "
                          f"with Architecture={built} (the built template's only choice), or `make build ARCH={runs}`")


check_build()
