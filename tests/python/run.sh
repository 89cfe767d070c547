#!/usr/bin/env bash
# The independent-client check: a node made with `patchwork quickstart`,
# loaded with deploy/examples, served on a free port, and checked by
# tests/python/interop.py — Python grpcio with stubs generated from the
# .proto files alone. Everything lives in a temporary folder (the virtualenv
# included) that is removed afterwards.
#
# Usage: tests/python/run.sh path/to/patchwork
# Exit status: 0 if every check passed; non-zero otherwise.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 path/to/patchwork" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$1
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
[ -x "$BIN" ] || { echo "error: $BIN is not an executable" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/patchwork-interop.XXXXXX")
NODE_PID=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [ -n "$NODE_PID" ] && kill -0 "$NODE_PID" 2>/dev/null; then
    kill -TERM "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

started=$SECONDS
echo "== python: virtualenv and pinned grpcio (tests/python/requirements.txt)"
if ! python3 -m venv "$WORK/venv"; then
  echo "error: python3 -m venv failed; on Debian or Ubuntu: apt-get install python3-venv" >&2
  exit 1
fi
"$WORK/venv/bin/pip" install --quiet --disable-pip-version-check \
  -r "$ROOT/tests/python/requirements.txt"

echo "== a quickstart node with deploy/examples"
PORT=$("$WORK/venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" quickstart --dir "$WORK/node" --listen "127.0.0.1:$PORT" >/dev/null
CONFIG=$WORK/node/node.toml
"$BIN" serve --config "$CONFIG" </dev/null >"$WORK/node.log" 2>&1 &
NODE_PID=$!
deadline=$((SECONDS + 30))
until "$BIN" stats --config "$CONFIG" >/dev/null 2>&1; do
  if ! kill -0 "$NODE_PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "error: the node did not come up; its log:" >&2
    cat "$WORK/node.log" >&2
    exit 1
  fi
  sleep 0.2
done
for kind in organisations practitioners persons involvements; do
  "$BIN" import "$kind" --config "$CONFIG" --file "$ROOT/deploy/examples/$kind.csv" --quiet >/dev/null
done

echo "== interop.py"
status=0
"$WORK/venv/bin/python" "$ROOT/tests/python/interop.py" \
  --config "$CONFIG" --patchwork "$BIN" --proto "$ROOT/proto" || status=$?

kill -TERM "$NODE_PID"
if ! wait "$NODE_PID"; then
  echo "error: the node did not stop cleanly; its log:" >&2
  cat "$WORK/node.log" >&2
  status=1
fi
NODE_PID=
if [ "$status" -ne 0 ]; then
  echo "== the node's log" >&2
  tail -n 40 "$WORK/node.log" >&2
fi
echo "== python interop check finished in $((SECONDS - started)) s (status $status)"
exit "$status"
