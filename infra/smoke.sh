#!/usr/bin/env bash
# Smoke test of a deployed (or local) Switchboard gateway through its OpenAI-compatible API.
#
#   infra/smoke.sh BASE_URL API_KEY [MODEL]
#
# BASE_URL ends in /v1, e.g. the stack's ApiUrl output:
#   https://abc123.execute-api.us-east-1.amazonaws.com/api/v1
# MODEL defaults to the first id that GET /models lists.
# Checks: GET /models; a non-streaming chat completion; a streaming one (SSE `data:` chunks
# ending in `data: [DONE]`, no error event). Exits non-zero with a message on the first failure.
# Env: SMOKE_TIMEOUT (seconds per request, default 60), SMOKE_PROMPT.
set -euo pipefail

usage() { echo "usage: $0 BASE_URL API_KEY [MODEL]" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 ]] || usage

BASE_URL=${1%/}
API_KEY=$2
MODEL=${3:-}
TIMEOUT=${SMOKE_TIMEOUT:-60}
PROMPT=${SMOKE_PROMPT:-Reply with the single word: pong}

command -v curl >/dev/null || { echo "smoke: curl is required" >&2; exit 2; }
PY=$(command -v python3 || command -v python || true)
[[ -n $PY ]] || { echo "smoke: python3 is required (JSON parsing)" >&2; exit 2; }
[[ $BASE_URL == */v1 ]] || echo "smoke: warning: BASE_URL does not end in /v1: $BASE_URL" >&2

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
ok() { echo "smoke: ok: $*"; }

# request METHOD PATH [JSON_BODY]: writes $WORK/body and $WORK/headers, and sets the globals
# status, ttfb and total (seconds).
request() {
    local method=$1 path=$2 data=${3:-}
    local args=(-sS -N --max-time "$TIMEOUT" -X "$method"
        -H "Authorization: Bearer $API_KEY" -H "Accept: application/json, text/event-stream"
        -D "$WORK/headers" -o "$WORK/body"
        -w '%{http_code} %{time_starttransfer} %{time_total}\n')
    if [[ -n $data ]]; then
        args+=(-H "Content-Type: application/json" --data-binary "$data")
    fi
    curl "${args[@]}" "$BASE_URL$path" >"$WORK/stats" || fail "$method $path: curl error (exit $?)"
    read -r status ttfb total <"$WORK/stats"
}

show_body() { head -c 2000 "$WORK/body" >&2; echo >&2; }
gateway_headers() { grep -i '^x-switchboard' "$WORK/headers" | tr -d '\r' | sed 's/^/    /' || true; }

# ---- 1. GET /models ---------------------------------------------------------------------
request GET /models
[[ $status == 200 ]] || { show_body; fail "GET /models returned HTTP $status"; }
first_model=$("$PY" - "$WORK/body" <<'EOF'
import json, sys
sys.excepthook = lambda t, e, tb: print(f"smoke: {t.__name__}: {e}", file=sys.stderr)
doc = json.load(open(sys.argv[1]))
assert doc.get("object") == "list", "object is not 'list'"
ids = [m["id"] for m in doc["data"]]
print(ids[0] if ids else "")
EOF
) || { show_body; fail "GET /models: not an OpenAI model list"; }
MODEL=${MODEL:-$first_model}
[[ -n $MODEL ]] || fail "GET /models lists no model and none was given"
ok "GET /models (HTTP $status, ${total}s); model: $MODEL"

# ---- 2. non-streaming chat completion ------------------------------------------------
body=$("$PY" -c 'import json,sys; print(json.dumps({"model": sys.argv[1], "max_tokens": 16,
    "messages": [{"role": "user", "content": sys.argv[2]}]}))' "$MODEL" "$PROMPT")
request POST /chat/completions "$body"
[[ $status == 200 ]] || { show_body; fail "chat completion returned HTTP $status"; }
summary=$("$PY" - "$WORK/body" <<'EOF'
import json, sys
sys.excepthook = lambda t, e, tb: print(f"smoke: {t.__name__}: {e}", file=sys.stderr)
doc = json.load(open(sys.argv[1]))
assert doc.get("object") == "chat.completion", f"object is {doc.get('object')!r}"
choice = doc["choices"][0]
content = choice["message"].get("content") or ""
usage = doc.get("usage") or {}
print(f"finish_reason={choice.get('finish_reason')} tokens={usage.get('prompt_tokens')}/"
      f"{usage.get('completion_tokens')} cost={usage.get('cost')} content={content[:60]!r}")
EOF
) || { show_body; fail "chat completion: unexpected body"; }
ok "chat completion (${total}s): $summary"
gateway_headers

# ---- 3. streaming chat completion ----------------------------------------------------
body=$("$PY" -c 'import json,sys; print(json.dumps({"model": sys.argv[1], "max_tokens": 16,
    "stream": True, "stream_options": {"include_usage": True},
    "messages": [{"role": "user", "content": sys.argv[2]}]}))' "$MODEL" "$PROMPT")
request POST /chat/completions "$body"
[[ $status == 200 ]] || { show_body; fail "streaming chat completion returned HTTP $status"; }
grep -qi '^content-type: *text/event-stream' "$WORK/headers" \
    || { show_body; fail "streaming chat completion: content-type is not text/event-stream"; }
summary=$("$PY" - "$WORK/body" <<'EOF'
import json, sys
sys.excepthook = lambda t, e, tb: print(f"smoke: {t.__name__}: {e}", file=sys.stderr)
events = [line[5:].strip() for line in open(sys.argv[1], encoding="utf-8").read().splitlines()
          if line.startswith("data:")]
assert events, "no 'data:' lines"
assert events[-1] == "[DONE]", f"last event is {events[-1][:120]!r}, not [DONE]"
chunks = [json.loads(e) for e in events[:-1]]
errors = [c["error"] for c in chunks if "error" in c]
assert not errors, f"error event in stream: {errors[0]}"
assert chunks, "no chunk before [DONE]"
assert all(c.get("object") == "chat.completion.chunk" for c in chunks), "non-chunk object in stream"
text = "".join((ch.get("delta") or {}).get("content") or "" for c in chunks for ch in c.get("choices", []))
finish = [ch.get("finish_reason") for c in chunks for ch in c.get("choices", []) if ch.get("finish_reason")]
assert finish, "no finish_reason in any chunk"
print(f"{len(chunks)} chunks, finish_reason={finish[-1]} content={text[:60]!r}")
EOF
) || { show_body; fail "streaming chat completion: bad event stream"; }
ok "streaming chat completion (first byte ${ttfb}s, total ${total}s): $summary"
gateway_headers

echo "smoke: all checks passed against $BASE_URL"
