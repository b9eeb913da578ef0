"""`pgkeeper serve`: the template's functions as local function URLs, one path prefix each.

    pgkeeper serve --env-vars env.json
    pgkeeper trigger http://127.0.0.1:8787/refresh --job refresh

Requests go through the functions' own handlers, signature checks and replay store included, so
an app in development calls it exactly as it will call the deployed function URLs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the template's functions as local function URLs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8787, help="TCP port (0: any free port; the URL is printed)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    p.add_argument("-t", "--template", help="SAM template (default: template.yaml or template.yml here)")
    p.add_argument("-n", "--env-vars", help='SAM env-vars file: {"Parameters": {...}, "<FunctionId>": {...}}')
    p.add_argument("--parameter-overrides", nargs="+", metavar="KEY=VALUE", default=[],
                   help="template parameter values (Key=Value or ParameterKey=K,ParameterValue=V)")
    p.add_argument("--function", action="append", metavar="LOGICAL_ID", help="serve only these (repeatable)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from ..local import invoke, serve
    from ..webhooks.secrets import SecretSource
    from .invoke import _template_path

    functions, env, notes = serve.load_functions(
        _template_path(args.template), env_vars_path=args.env_vars,
        parameter_overrides=invoke.parse_overrides(args.parameter_overrides), only=args.function)
    os.environ.update(env)
    for note in notes:
        print(f"pgkeeper serve: {note}", file=sys.stderr)
    if not SecretSource.configured():  # what the handlers will see, env.json and the shell's env alike
        print("pgkeeper serve: no PGKEEPER_WEBHOOK_SECRETS / _ARN: every request will be refused "
              "(401 signing_not_configured); make a secret with `pgkeeper sign --new-secret`", file=sys.stderr)

    def ready(server: serve.UrlServer) -> None:
        print(f"pgkeeper serve: {server.url}", flush=True)
        for prefix, fn in sorted(server.functions.items()):
            print(f"  {server.url}/{prefix}/  ->  {fn.logical_id}", file=sys.stderr)
        print("  POST / runs the job, GET /runs/<id>, GET /health (all signed); Ctrl-C stops",
              file=sys.stderr, flush=True)

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        serve.serve(functions, host=args.host, port=args.port, ready=ready)
    except KeyboardInterrupt:
        print("pgkeeper serve: stopped", file=sys.stderr)
    return 0
