"""`pgkeeper invoke FUNCTION`: run a function of template.yaml locally, as `sam local invoke` would,
without Docker. The handler's JSON result is printed on stdout, its logs on stderr; when the handler
raises, Lambda's error shape {"errorType", "errorMessage"} is printed instead and the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "invoke", help="run a function of template.yaml locally (like `sam local invoke`, no Docker)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("function", metavar="FUNCTION", help="logical id in the template, e.g. RefreshFunction")
    p.add_argument("-e", "--event", help="event JSON file, or - for stdin (default: {})")
    p.add_argument("-n", "--env-vars", help='SAM env-vars file: {"Parameters": {...}, "<FunctionId>": {...}}')
    p.add_argument("-t", "--template", help="SAM template (default: template.yaml or template.yml here)")
    p.add_argument("--parameter-overrides", nargs="+", metavar="KEY=VALUE", default=[],
                   help="template parameter values (Key=Value or ParameterKey=K,ParameterValue=V)")
    p.set_defaults(func=run_invoke)


def _template_path(given: str | None) -> Path:
    from ..local.template import TemplateError

    if given:
        return Path(given)
    for name in ("template.yaml", "template.yml"):
        if Path(name).is_file():
            return Path(name)
    raise TemplateError("no template.yaml in this directory: pass --template")


def run_invoke(args: argparse.Namespace) -> int:
    from ..local import invoke

    event = invoke.read_event(args.event)
    inv = invoke.prepare(_template_path(args.template), args.function, event=event, env_vars_path=args.env_vars,
                         parameter_overrides=invoke.parse_overrides(args.parameter_overrides))
    fn = inv.function
    for note in inv.notes:
        print(f"pgkeeper invoke: {note}", file=sys.stderr)
    print(f"pgkeeper invoke: {fn.logical_id} {fn.handler} ({fn.runtime} {fn.architecture}, timeout {fn.timeout_s:g}s)"
          f" in local Python {platform.python_version()}", file=sys.stderr, flush=True)
    outcome = invoke.run(inv)
    print(json.dumps(outcome.payload), flush=True)
    return 0 if outcome.ok else 1
