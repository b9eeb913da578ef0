"""Cold start: each handler's import-to-ready time in a fresh interpreter, and what it drags in.

Every scale-out pays for the handler's imports before the first event is handled. For each function
in template.yaml, a fresh `python -I` gets the function's sys.path and environment exactly as
`pgkeeper invoke` builds them, imports the handler module and reports the elapsed time (median of
several runs) and which heavy modules (boto3, botocore's client machinery, aws_xray_sdk) were loaded. The baseline is
what a handler would pay for `import boto3` alone, the usual first line of a hand-written one.

Measured with the local Python (not the runtime's 3.13 on Graviton), so compare ratios, not values.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "layers/common/python"))

from pgkeeper.local.invoke import prepare  # noqa: E402
from pgkeeper.local.template import Template  # noqa: E402

# Modules that cost real time and that a job must not import unless it uses them. Bare `botocore`
# (~11 ms) is not listed: Powertools' package __init__ imports it for its user-agent hook.
HEAVY = ("boto3", "botocore.session", "botocore.client", "aws_xray_sdk")

_PROBE = """
import json, sys, time
t0 = time.perf_counter()
sys.path[:0] = json.loads(sys.argv[1])
import importlib
module = importlib.import_module(sys.argv[2])
assert callable(getattr(module, sys.argv[3]))
ms = (time.perf_counter() - t0) * 1000
heavy = sorted(m for m in json.loads(sys.argv[4]) if m in sys.modules)
print(json.dumps({"ms": ms, "heavy": heavy, "modules": len(sys.modules)}))
"""


def _probe(sys_path: list[str], module: str, attr: str, env: dict[str, str], importtime: bool = False) -> dict:
    cmd = [sys.executable, "-I", *(["-X", "importtime"] if importtime else []), "-c", _PROBE,
           json.dumps(sys_path), module, attr, json.dumps(HEAVY)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"importing {module} failed: {proc.stderr.strip().splitlines()[-1:]}")
    out = json.loads(proc.stdout)
    if importtime:
        out["largest_imports"] = _largest(proc.stderr)
    return out


def _largest(importtime: str, n: int = 6) -> dict[str, float]:
    """Top-level packages by the import time spent in their own modules (ms), from `-X importtime`."""
    totals: dict[str, float] = {}
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, _cumulative_us, name = line.removeprefix("import time:").split("|")
        top = name.strip().split(".")[0]
        totals[top] = totals.get(top, 0.0) + int(self_us) / 1000
    return {k: round(v, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])[:n]}


def main(quick: bool = False) -> dict:
    runs = 5 if quick else 15
    template = Template(ROOT / "template.yaml")
    targets = {}
    for logical_id in template.function_ids():
        inv = prepare(ROOT / "template.yaml", logical_id, event={})
        module, _, attr = inv.function.handler.rpartition(".")
        targets[logical_id] = (inv, module, attr, _probe(inv.sys_path, module, attr, inv.env))
    env = next(iter(targets.values()))[0].env

    # Rounds interleave the handlers and the baseline, so load from other processes hits all alike.
    samples: dict[str, list[float]] = {k: [] for k in targets}
    boto3_samples: list[float] = []
    baseline_code = "import time; t0 = time.perf_counter(); import boto3; print((time.perf_counter() - t0) * 1000)"
    for _ in range(runs):
        for logical_id, (inv, module, attr, _first) in targets.items():
            samples[logical_id].append(_probe(inv.sys_path, module, attr, inv.env)["ms"])
        boto3_samples.append(float(subprocess.run([sys.executable, "-I", "-c", baseline_code], capture_output=True,
                                                  text=True, env=env, check=True).stdout))
    coldstart = {k: round(statistics.median(v), 1) for k, v in samples.items()}
    boto3_ms = statistics.median(boto3_samples)
    for logical_id in targets:
        print(f"coldstart: {logical_id}: {coldstart[logical_id]} ms, heavy={targets[logical_id][3]['heavy']}",
              file=sys.stderr)
    return {
        "bench": "coldstart",
        "python": platform.python_version(),
        "runs": runs,
        "coldstart_ms": coldstart,
        "heavy_modules": {k: t[3]["heavy"] for k, t in targets.items()},
        "modules_loaded": {k: t[3]["modules"] for k, t in targets.items()},
        "largest_imports_ms": {k: _probe(t[0].sys_path, t[1], t[2], t[0].env, importtime=True)["largest_imports"]
                               for k, t in targets.items()},
        "baseline_import_boto3_ms": round(boto3_ms, 1),
        "ratio_to_boto3_import": {k: round(v / boto3_ms, 2) for k, v in coldstart.items()},
    }


if __name__ == "__main__":
    print(json.dumps(main(quick="--quick" in sys.argv)))
