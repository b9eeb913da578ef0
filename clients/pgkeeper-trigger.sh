#!/bin/sh
# pgkeeper-trigger.sh: sign (Standard Webhooks) and send a request to a pgkeeper function URL.
# POSIX sh + curl + openssl; for a Fly scheduled machine, a release_command, a cron box or CI.
#
#   PGKEEPER_WEBHOOK_SECRET=whsec_... pgkeeper-trigger.sh URL JOB ['{"views":["daily_sales"]}']
#   PGKEEPER_WEBHOOK_SECRET=whsec_... pgkeeper-trigger.sh --get URL /runs/RUN_ID      (or /health)
#
# Env: PGKEEPER_WEBHOOK_SECRET (required)
#      PGKEEPER_ASYNC=1      ask for 202 + an asynchronous run even for a short job
#      PGKEEPER_WAIT=1       after a 202, poll /runs/<id> until the run ends (PGKEEPER_WAIT_TIMEOUT, 900 s)
#      PGKEEPER_SIGN_ONLY=1  print the headers and body instead of sending
# Prints the answer's body on stdout and "HTTP <status>" on stderr. Exit status: 0 for 2xx (and,
# when waiting, a run that did not fail), 1 otherwise, 2 for a usage or network problem.
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

out=$(mktemp) || die "mktemp failed"
trap 'rm -f "$out"' EXIT

# sign_headers METHOD PATH BODY: sets id, ts, sig. A body-less request signs its request line
# ("GET /runs/<id>"), so the signature names the path it was made for.
sign_headers() {
  id="msg_$(openssl rand -hex 16)"
  ts=$(date +%s)
  if [ -n "$3" ]; then payload=$3; else payload="$1 $2"; fi
  sig=$(printf '%s.%s.%s' "$id" "$ts" "$payload" \
    | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | openssl base64 -A)
}

# send METHOD PATH BODY: the answer's body goes to $out, its status to $status.
send() {
  sign_headers "$1" "$2" "$3"
  if [ -n "$3" ]; then
    status=$(curl -sS -o "$out" -w '%{http_code}' -X "$1" "${url%/}$2" -H "content-type: application/json" \
      -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig" --data-binary "$3") \
      || die "cannot reach ${url%/}$2"
  else
    status=$(curl -sS -o "$out" -w '%{http_code}' -X "$1" "${url%/}$2" \
      -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig") \
      || die "cannot reach ${url%/}$2"
  fi
}

# field NAME: the first top-level-looking "NAME": "value" of the answer (enough for run_id, status).
field() { tr ',' '\n' < "$out" | sed -n "s/^[{ ]*\"$1\": *\"\([^\"]*\)\".*/\1/p" | head -n 1; }

if [ "${PGKEEPER_SIGN_ONLY:-}" = "1" ]; then
  sign_headers "$method" "$path" "$body"
  printf 'webhook-id: %s\nwebhook-timestamp: %s\nwebhook-signature: v1,%s\n\n%s\n' "$id" "$ts" "$sig" "$body"
  exit 0
fi

send "$method" "$path" "$body"
if [ "$status" = 202 ] && [ "${PGKEEPER_WAIT:-}" = "1" ]; then
  run_id=$(field run_id)
  [ -n "$run_id" ] || die "202 without a run_id"
  echo "HTTP 202: run $run_id queued; waiting" >&2
  deadline=$(( $(date +%s) + ${PGKEEPER_WAIT_TIMEOUT:-900} ))
  delay=1
  while :; do
    sleep "$delay"
    send GET "/runs/$run_id" ""
    run_status=$(field status)
    case $run_status in queued|running) ;; *) break ;; esac
    [ "$(date +%s)" -lt "$deadline" ] || break
    [ "$delay" -lt 10 ] && delay=$((delay * 2))
  done
  cat "$out"; echo
  echo "HTTP $status (run $run_id: ${run_status:-unknown})" >&2
  [ "$status" -lt 400 ] && [ "$run_status" != failed ] && [ "$run_status" != queued ] && [ "$run_status" != running ]
  exit
fi
cat "$out"; echo
echo "HTTP $status" >&2
[ "$status" -lt 400 ]
