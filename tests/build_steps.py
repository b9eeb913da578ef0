"""The suite's slow steps: `make build` per architecture and the Lambda runtime's own packages.

Each step is a process of its own (sam, pip unpacking wheels), mostly single-threaded, so they run
side by side: the first test asking for a step starts every step the selected tests need, and each
test then waits for its own. Under pytest-xdist every test using them is in one group (conftest),
so one worker builds once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pgkeeper import MACHINES  # Lambda's architecture names -> the CPU's

ROOT = Path(__file__).resolve().parents[1]
SAM = ROOT / ".venv-tools/bin/sam"
HOST_ARCH = {machine: arch for arch, machine in MACHINES.items()}.get(platform.machine(), "x86_64")
"""The build whose binaries run on this machine (the Lambda architecture of the same CPU)."""
RUNTIME_PACKAGES = ["boto3", "awslambdaric"]
"""What Lambda's python3.13 image has besides the stdlib: boto3, and the runtime interface client
that starts the handler (`python -m awslambdaric app.lambda_handler`)."""


@functools.cache
def python313() -> str | None:
    """A CPython 3.13 (the template's runtime) on this machine: PGKEEPER_PYTHON313, python3.13 on PATH,
    or pyenv's; None when there is none (`scripts/python313.sh` says how to get one)."""
    candidates = [os.environ.get("PGKEEPER_PYTHON313"), shutil.which("python3.13"),
                  *map(str, sorted(Path.home().glob(".pyenv/versions/3.13*/bin/python3.13"), reverse=True))]
    for found in candidates:
        if not found:
            continue
        code = "import sys; assert sys.version_info[:2] == (3, 13); print(sys.executable)"
        probe = subprocess.run([found, "-c", code],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return probe.stdout.strip()  # the interpreter itself, not a pyenv shim (a script needing pyenv)
    return None


class SlowSteps:
    """`make build ARCH=...` into scratch directories (the same command a user runs), and the pip
    install of the runtime's packages, each started once and awaited by the tests that need it."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._running: dict[str, tuple[subprocess.Popen, Path, Any]] = {}
        self._wanted: list[str] = []

    def start(self, steps: list[str]) -> None:
        self._wanted = list(dict.fromkeys([*self._wanted, *steps]))
        for step in self._wanted:
            self._spawn(step)

    def _spawn(self, step: str) -> None:
        if step in self._running:
            return
        out = self.scratch(step)
        if step == "runtime":
            machine = MACHINES[HOST_ARCH]
            result = out / "runtime"
            cmd = [str(ROOT / ".venv/bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                   "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.13",
                   "--platform", f"manylinux2014_{machine}", "--platform", f"manylinux_2_28_{machine}",
                   "--target", str(result), *RUNTIME_PACKAGES]
        else:
            result = out / "build"
            cmd = ["make", "--no-print-directory", "build", f"ARCH={step}", f"BUILD_DIR={result}"]
        log = (out / "output.log").open("w+b")
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._running[step] = (proc, result, log)

    def get(self, step: str) -> Path:
        """The step's result (a build dir, or the runtime's site dir) once its process succeeded."""
        self.start([step])
        proc, result, log = self._running[step]
        returncode = proc.wait(timeout=600)
        log.seek(0)
        output = log.read().decode(errors="replace")
        assert returncode == 0, f"{' '.join(map(str, proc.args))}: {output[-6000:]}"
        return result

    def scratch(self, name: str) -> Path:
        """A directory of the steps' own, removed with them."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="pgk-slow-steps-"))
        path = self._root / name
        path.mkdir(exist_ok=True)
        return path

    def stop(self) -> None:
        """Ends what still runs (the tests stopped early) and removes the scratch directories."""
        for proc, _, log in self._running.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
            log.close()
        self._running.clear()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
