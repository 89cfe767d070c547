#!/usr/bin/env bash
# Stops the nodes deploy/federation-up.sh started in DIR: SIGTERM (each node
# drains its requests and flushes its store), then SIGKILL for any still
# running after 30 s. Leaves DIR (keys, data, logs) for inspection; remove it
# with `rm -rf DIR`.
#
# Usage: deploy/federation-down.sh DIR
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR=$1
[ -d "$DIR" ] || { echo "error: $DIR is not a folder" >&2; exit 1; }

# A live process (a zombie nobody has reaped yet counts as gone).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ ! -r "/proc/$1/stat" ] || [ "$(cut -d' ' -f3 "/proc/$1/stat")" != Z ]
}

stopping=()
for pid_file in "$DIR"/*.pid; do
  [ -e "$pid_file" ] || continue
  name=$(basename "$pid_file" .pid)
  pid=$(cat "$pid_file")
  if alive "$pid"; then
    kill -TERM "$pid"
    stopping+=("$name:$pid")
  else
    rm -f "$pid_file"
  fi
done

deadline=$((SECONDS + 30))
for entry in "${stopping[@]+"${stopping[@]}"}"; do
  name=${entry%%:*}
  pid=${entry#*:}
  while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.1
  done
  if alive "$pid"; then
    echo "federation-down: $name (pid $pid) did not stop within 30 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  else
    echo "federation-down: $name stopped"
  fi
  rm -f "$DIR/$name.pid"
done
