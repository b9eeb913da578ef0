"""Cold start: each handler's import-to-ready time in a fresh interpreter, and what it drags in.

Every scale-out pays for the handler's imports before the first event is handled. For each function
in template.yaml, a fresh `python -I` gets the function's sys.path and environment exactly as
`pgkeeper invoke` builds them, imports the handler module and reports the elapsed time (median of
several runs) and which heavy modules (boto3, botocore's client machinery, aws_xray_sdk) were loaded. The baseline is
what a handler would pay for `import boto3` alone, the usual first line of a hand-written one.

The source-tree figures (`coldstart_ms`) use the local Python. `coldstart_ms_built` is what users
deploy: the `make build` output for this machine's architecture, each function started as Lambda
starts it (tests/runtime_api.py: read-only /var/task and /opt, CPython 3.13, awslambdaric), timed
from process start to the runtime's first request for an event (Lambda's Init Duration), with the
layer's precompiled bytecode and without it (`coldstart_ms_built_without_pyc`, the layer as it was
shipped before). It includes the sandbox's own setup (`sandbox_ms`: the same start with a handler
that imports nothing), which Lambda does not charge. Sizes are unzipped bytes per function (its
code and layers), what counts against Lambda's 250 MB.
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
        **built(quick),
    }


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def built(quick: bool = False) -> dict:
    """Cold start and size of the built bundle under the runtime's Python, as Lambda starts it."""
    import shutil

    sys.path.insert(0, str(ROOT / "tests"))
    from build_steps import HOST_ARCH, SlowSteps, python313
    from runtime_api import LambdaFunction, sandbox_problem

    python = python313()
    problem = sandbox_problem() or (None if python else "no CPython 3.13 (scripts/python313.sh)")
    if problem:
        return {"skipped": problem}
    steps = SlowSteps()
    try:
        steps.start([HOST_ARCH, "runtime"])
        build, runtime = steps.get(HOST_ARCH), steps.get("runtime")
        without_pyc = steps.scratch("without-pyc") / "build"
        shutil.copytree(build, without_pyc, symlinks=True)
        for cache in list(without_pyc.rglob("__pycache__")):
            shutil.rmtree(cache)
        empty = steps.scratch("empty-handler") / "build"
        shutil.copytree(build, empty, symlinks=True)
        template = Template(build / "template.yaml")
        for logical_id in template.function_ids():
            (empty / logical_id / "app.py").write_text("def lambda_handler(event, context):\n    return {}\n")

        def start_ms(build_dir: Path, logical_id: str) -> float:
            fn = LambdaFunction(build_dir, logical_id, python=python, runtime_dir=runtime,
                                scratch=steps.scratch("bench"), env={})
            fn.start()
            try:
                return fn.wait_ready() * 1000
            finally:
                fn.stop()

        runs = 3 if quick else 9
        ids = template.function_ids()
        with_pyc: dict[str, list[float]] = {k: [] for k in ids}
        no_pyc: dict[str, list[float]] = {k: [] for k in ids}
        sandbox: list[float] = []
        for _ in range(runs):  # interleaved, so other load hits every variant alike
            for logical_id in ids:
                with_pyc[logical_id].append(start_ms(build, logical_id))
                no_pyc[logical_id].append(start_ms(without_pyc, logical_id))
            sandbox.append(start_ms(empty, ids[0]))
        sizes = {}
        for logical_id in ids:
            fn = template.function(logical_id)
            sizes[logical_id] = _du(fn.code_dir) + sum(_du(layer.content_dir) for layer in fn.layers
                                                       if layer.content_dir is not None)
        median = {k: round(statistics.median(v), 1) for k, v in with_pyc.items()}
        median_no = {k: round(statistics.median(v), 1) for k, v in no_pyc.items()}
        for logical_id in ids:
            print(f"coldstart (built, 3.13): {logical_id}: {median[logical_id]} ms with .pyc, "
                  f"{median_no[logical_id]} ms without; {sizes[logical_id] / 1e6:.1f} MB unzipped", file=sys.stderr)
        return {
            "architecture": HOST_ARCH,
            "python_built": subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                                           capture_output=True, text=True).stdout.strip(),
            "runs_built": runs,
            "coldstart_ms_built": median,
            "coldstart_ms_built_without_pyc": median_no,
            "pyc_speedup": {k: round(median_no[k] / median[k], 2) for k in ids},
            "sandbox_ms": round(statistics.median(sandbox), 1),
            "unzipped_bytes": sizes,
        }
    finally:
        steps.stop()


if __name__ == "__main__":
    print(json.dumps(main(quick="--quick" in sys.argv)))
