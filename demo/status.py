"""Demo section: `pgkeeper status`, after the jobs above ran: what each silence window last proved,
what would alarm (nothing: every job just ran), the next scheduled runs."""

from __future__ import annotations

import os
import subprocess
import sys

from demo.__main__ import ROOT, Demo


def run(demo: Demo) -> None:
    print("\n$ pgkeeper status      # exit 1 names what is overdue: what the silence alarms would say")
    env = {**os.environ, "DATABASE_URL": demo.url, "PGKEEPER_PLAN": str(demo.plan)}
    env.pop("PGKEEPER_SCHEDULES", None)
    proc = subprocess.run([sys.executable, "-m", "pgkeeper.cli", "status", "--template", str(ROOT / "template.yaml")],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    print(proc.stdout.rstrip())
    if proc.returncode not in (0, 1):
        raise SystemExit(f"demo: pgkeeper status failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    print(f"(exit {proc.returncode}: {proc.stderr.strip() or 'nothing overdue'})")
