#!/bin/sh
# pgkeeper-trigger.sh: sign (Standard Webhooks) and send one request to a pgkeeper function URL.
# POSIX sh + curl + openssl; for a Fly scheduled machine, a cron box or a CI step.
#
#   PGKEEPER_WEBHOOK_SECRET=whsec_... pgkeeper-trigger.sh URL JOB ['{"views":["daily_sales"]}']
#   PGKEEPER_WEBHOOK_SECRET=whsec_... pgkeeper-trigger.sh --get URL /runs/RUN_ID      (or /health)
#
# Env: PGKEEPER_WEBHOOK_SECRET (required), PGKEEPER_ASYNC=1 (ask for 202 + asynchronous run),
#      PGKEEPER_SIGN_ONLY=1 (print the headers and body instead of sending).
# Prints the answer's body on stdout and "HTTP <status>" on stderr; exits 1 on a 4xx/5xx answer.
# The HMAC key is handed to openssl as an argument: on a machine shared with other users prefer
# the Node client, which keeps it in-process.
set -eu

die() { echo "pgkeeper-trigger: $*" >&2; exit 2; }

method=POST
if [ "${1:-}" = "--get" ]; then
  method=GET; shift
  [ $# -eq 2 ] || die "usage: $0 --get URL PATH"
  url=$1; path=$2; body=""
else
  [ $# -ge 2 ] && [ $# -le 3 ] || die "usage: $0 URL JOB [OPTIONS_JSON]  |  $0 --get URL PATH"
  url=$1; job=$2; options=${3:-"{}"}; path=/
  case $job in *[!a-z_]*|"") die "JOB must be a job name (refresh, cleanup, vacuum, backup)" ;; esac
  case $options in "{"*"}") ;; *) die "OPTIONS_JSON must be a JSON object" ;; esac
  async=""
  [ "${PGKEEPER_ASYNC:-}" = "1" ] && async=',"async":true'
  body="{\"job\":\"$job\",\"options\":$options$async}"
fi
case $path in /*) ;; *) die "PATH must start with /" ;; esac

secret=${PGKEEPER_WEBHOOK_SECRET:-}
case $secret in whsec_?*) ;; *) die "set PGKEEPER_WEBHOOK_SECRET to the whsec_... signing secret" ;; esac
hexkey=$(printf '%s' "${secret#whsec_}" | openssl base64 -d -A | od -An -v -tx1 | tr -d ' \n')
[ -n "$hexkey" ] || die "PGKEEPER_WEBHOOK_SECRET is not whsec_<base64>"

id="msg_$(openssl rand -hex 16)"
ts=$(date +%s)
# A body-less request signs its request line ("GET /runs/<id>"), so the signature names the path.
if [ -n "$body" ]; then payload=$body; else payload="$method $path"; fi
sig=$(printf '%s.%s.%s' "$id" "$ts" "$payload" \
  | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | openssl base64 -A)

if [ "${PGKEEPER_SIGN_ONLY:-}" = "1" ]; then
  printf 'webhook-id: %s\nwebhook-timestamp: %s\nwebhook-signature: v1,%s\n\n%s\n' "$id" "$ts" "$sig" "$body"
  exit 0
fi

target="${url%/}$path"
out=$(mktemp) || die "mktemp failed"
trap 'rm -f "$out"' EXIT
if [ "$method" = POST ]; then
  status=$(curl -sS -o "$out" -w '%{http_code}' -X POST "$target" \
    -H "content-type: application/json" -H "webhook-id: $id" -H "webhook-timestamp: $ts" \
    -H "webhook-signature: v1,$sig" --data-binary "$body") || die "cannot reach $target"
else
  status=$(curl -sS -o "$out" -w '%{http_code}' "$target" \
    -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig") || die "cannot reach $target"
fi
cat "$out"; echo
echo "HTTP $status" >&2
[ "$status" -lt 400 ]
