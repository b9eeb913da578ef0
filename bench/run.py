"""`make bench BENCH=<name> [QUICK=1]`: run benchmarks; the last line printed is a JSON summary.

Each benchmark is `bench/<name>.py` with `main(quick: bool) -> dict`; its dict has `bench` plus
the keys its issue names. Progress goes to stderr, the summary to stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem not in {"run", "common"} and not p.stem.startswith("_"))


def load(name: str):
    path = HERE / f"{name}.py"
    if not path.exists():
        raise SystemExit(f"bench: no benchmark {name!r}; available: {', '.join(available())}")
    sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", nargs="?", default="all", help=f"one of: all, {', '.join(available())}")
    parser.add_argument("--quick", action="store_true", help="small data, finishes in under two minutes")
    args = parser.parse_args()
    names = available() if args.name == "all" else [args.name]
    results = []
    for name in names:
        print(f"bench {name}: running{' (quick)' if args.quick else ''}", file=sys.stderr)
        t0 = time.monotonic()
        result = load(name).main(quick=args.quick)
        result.setdefault("bench", name)
        result["quick"] = args.quick
        result["wall_s"] = round(time.monotonic() - t0, 2)
        print(json.dumps(result), flush=True)
        results.append(result)
    if len(results) > 1:
        print(json.dumps({"bench": "all", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
