#!/usr/bin/env bash
# A three-council federation on this machine, as three separate `patchwork
# serve` processes on 127.0.0.1, set up the way operators set up real ones:
#
#   - two regions, each with its own CA (`patchwork ca init`): England
#     (Surrey, Brighton & Hove) and Victoria (the City of Melbourne);
#   - each node makes its own key and request (`patchwork cert request`),
#     its region's CA signs it (`patchwork ca sign`) and publishes a CRL
#     (`patchwork ca crl`); every node trusts both CAs and both CRLs;
#   - match-key secrets: "england" (Surrey and Brighton) and "border" (all
#     three), 32 random bytes each, 0600;
#   - each node lists the other two as peers, with an agreement;
#   - a little data: deploy/examples for Surrey, deploy/examples/brighton and
#     deploy/examples/melbourne for the others; Amelia Smith-Jones (born
#     2015-03-14) is known to all three.
#
# Usage (the binary: PATCHWORK=path/to/patchwork, else this checkout's
# target/release/patchwork or target/debug/patchwork, else `patchwork` on PATH):
#   deploy/federation-up.sh DIR
#       sets everything up in DIR (which must be empty or missing), starts
#       the three nodes and waits until each answers `patchwork stats`.
#   deploy/federation-up.sh DIR NAME
#       starts one node (surrey, brighton or melbourne) of DIR again, with the
#       same config, e.g. after it was stopped or killed.
#   deploy/federation-down.sh DIR
#       stops them (SIGTERM, then SIGKILL after 30 s).
#
# In DIR: ca/<region>/ (the CAs; offline in real life), trust/ (CA
# certificates and CRLs), secrets/, <node>/ (node.key, node.crt, node.toml,
# data/), <node>.pid and <node>.log.
#
# Ports: PATCHWORK_PORTS="p1 p2 p3" (Surrey, Brighton, Melbourne), or three
# free ones are picked; each node's metrics go to another free port.
set -euo pipefail

usage() {
  echo "usage: [PATCHWORK=path/to/patchwork] $0 DIR [surrey|brighton|melbourne]" >&2
  exit 2
}
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EXAMPLES=$HERE/examples
NODES=(surrey brighton melbourne)

# The binary: $PATCHWORK if set; else the one built in this checkout
# (target/release, then target/debug, under $CARGO_TARGET_DIR if set), which
# matches these scripts; else `patchwork` on PATH (an installed one).
if [ -n "${PATCHWORK:-}" ]; then
  PW=$PATCHWORK
  case $PW in
    */*) PW=$(cd "$(dirname "$PW")" 2>/dev/null && pwd)/$(basename "$PW") || PW= ;;
    *) PW=$(command -v "$PW" || true) ;;
  esac
  if [ -z "$PW" ] || [ ! -x "$PW" ] || [ -d "$PW" ]; then
    echo "error: PATCHWORK=$PATCHWORK is not an executable patchwork binary" >&2
    exit 1
  fi
else
  TARGET=${CARGO_TARGET_DIR:-$HERE/../target}
  PW=
  for candidate in "$TARGET/release/patchwork" "$TARGET/debug/patchwork" "$(command -v patchwork || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && [ ! -d "$candidate" ]; then
      PW=$(cd "$(dirname "$candidate")" && pwd)/$(basename "$candidate")
      break
    fi
  done
  if [ -z "$PW" ]; then
    echo "error: no patchwork binary: none in $TARGET/release or $TARGET/debug, none on PATH;" \
      "build it (cargo build --release) or set PATCHWORK=path/to/patchwork" >&2
    exit 1
  fi
fi
echo "federation-up: using $PW ($("$PW" --version 2>/dev/null || echo "version unknown"))"

mkdir -p "$1"
DIR=$(cd "$1" && pwd)

log() { echo "federation-up: $*"; }

# A live process (a zombie nobody has reaped yet counts as gone).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ ! -r "/proc/$1/stat" ] || [ "$(cut -d' ' -f3 "/proc/$1/stat")" != Z ]
}

# The node's process, if its pid file names a live one.
running_pid() {
  local pid_file=$DIR/$1.pid pid
  [ -f "$pid_file" ] || return 1
  pid=$(cat "$pid_file")
  alive "$pid" || return 1
  echo "$pid"
}

# Polls `patchwork stats` until the node answers (at most 30 s).
wait_ready() {
  local name=$1 pid=$2 deadline=$((SECONDS + 30))
  until "$PW" stats --config "$DIR/$name/node.toml" >/dev/null 2>&1; do
    if ! alive "$pid"; then
      echo "error: $name stopped while starting; the end of $DIR/$name.log:" >&2
      tail -n 20 "$DIR/$name.log" >&2
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "error: $name did not answer within 30 s; see $DIR/$name.log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

start_node() {
  local name=$1 pid
  if pid=$(running_pid "$name"); then
    log "$name is already running (pid $pid)"
    return
  fi
  # Its own process group, stdin closed, output to its log: it outlives
  # this script and holds none of its caller's pipes open.
  setsid "$PW" serve --config "$DIR/$name/node.toml" </dev/null >>"$DIR/$name.log" 2>&1 &
  pid=$!
  echo "$pid" >"$DIR/$name.pid"
  wait_ready "$name" "$pid"
  log "$name is up (pid $pid, log $DIR/$name.log)"
}

# ------------------------------------------------------------ one node again
if [ $# -eq 2 ]; then
  case $2 in
    surrey | brighton | melbourne) ;;
    *) usage ;;
  esac
  [ -f "$DIR/$2/node.toml" ] || { echo "error: $DIR holds no $2 node; set it up first" >&2; exit 1; }
  start_node "$2"
  exit 0
fi

# ------------------------------------------------------------ set up
if [ -n "$(ls -A "$DIR")" ]; then
  echo "error: $DIR is not empty; set up into a new folder, or start one node: $0 $DIR NAME" >&2
  exit 1
fi

# Prints $1 distinct ports nothing answers on.
free_ports() {
  local want=$1 picked=" " port
  for _ in $(seq 1 500); do
    port=$((20000 + RANDOM % 40000))
    if [[ $picked != *" $port "* ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      picked="$picked$port "
      want=$((want - 1))
      [ "$want" -gt 0 ] || { echo "$picked"; return; }
    fi
  done
  echo "error: found no free ports" >&2
  return 1
}

if [ -n "${PATCHWORK_PORTS:-}" ]; then
  read -r SURREY_PORT BRIGHTON_PORT MELBOURNE_PORT <<<"$PATCHWORK_PORTS"
  [ -n "${MELBOURNE_PORT:-}" ] || { echo "error: PATCHWORK_PORTS needs three ports" >&2; exit 1; }
  read -r SURREY_METRICS BRIGHTON_METRICS MELBOURNE_METRICS <<<"$(free_ports 3)"
else
  read -r SURREY_PORT BRIGHTON_PORT MELBOURNE_PORT SURREY_METRICS BRIGHTON_METRICS MELBOURNE_METRICS \
    <<<"$(free_ports 6)"
fi
[ -n "${MELBOURNE_METRICS:-}" ] || exit 1

umask 077
mkdir -p "$DIR/ca" "$DIR/trust" "$DIR/secrets"

log "two regions' certificate authorities"
"$PW" ca init --dir "$DIR/ca/england" --trust-domain england.patchwork \
  --name "England Patchwork CA (demo)" >/dev/null
"$PW" ca init --dir "$DIR/ca/victoria" --trust-domain vic.patchwork \
  --name "Victoria Patchwork CA (demo)" >/dev/null

region_of() { [ "$1" = melbourne ] && echo victoria || echo england; }
domain_of() { [ "$1" = melbourne ] && echo vic.patchwork || echo england.patchwork; }
identity_of() { echo "spiffe://$(domain_of "$1")/node/$1"; }
port_of() {
  case $1 in
    surrey) echo "$SURREY_PORT" ;;
    brighton) echo "$BRIGHTON_PORT" ;;
    melbourne) echo "$MELBOURNE_PORT" ;;
  esac
}
metrics_port_of() {
  case $1 in
    surrey) echo "$SURREY_METRICS" ;;
    brighton) echo "$BRIGHTON_METRICS" ;;
    melbourne) echo "$MELBOURNE_METRICS" ;;
  esac
}

for name in "${NODES[@]}"; do
  log "$name: key and request made on the node, signed by the $(region_of "$name") CA"
  mkdir -p "$DIR/$name"
  "$PW" cert request --dir "$DIR/$name" --node-id "$name" --trust-domain "$(domain_of "$name")" \
    --dns localhost --ip 127.0.0.1 >/dev/null
  "$PW" ca sign --ca "$DIR/ca/$(region_of "$name")" --csr "$DIR/$name/node.csr" \
    --out "$DIR/$name/node.crt" --node-id "$name" --days 30 >/dev/null
done

for region in england victoria; do
  cp "$DIR/ca/$region/ca.crt" "$DIR/trust/$region-ca.crt"
  "$PW" ca crl --ca "$DIR/ca/$region" --out "$DIR/trust/$region.crl" --days 7 >/dev/null
done
chmod 0644 "$DIR"/trust/*

# 32 random bytes as hex, the same file for every node of the group.
for set in england border; do
  head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$DIR/secrets/$set.key"
  chmod 0600 "$DIR/secrets/$set.key"
done

peer() {
  local name=$1 key_set=$2 display=$3
  cat <<EOF

[[federation.peers]]
identity = "$(identity_of "$name")"
name = "$display"
address = "127.0.0.1:$(port_of "$name")"
key_set = "$key_set"
purposes = ["child-safeguarding", "adult-safeguarding", "vital-interests"]
sensitivities = ["standard", "restricted"]
rate_limit_per_minute = 600
EOF
}

key_set() {
  cat <<EOF

[[federation.key_sets]]
name = "$1"
secret_file = "$DIR/secrets/$1.key"
EOF
}

write_config() {
  local name=$1 display=$2 scheme=$3
  {
    cat <<EOF
# Made by deploy/federation-up.sh; every key is explained in deploy/node.example.toml.
[node]
display_name = "$display"
data_dir = "$DIR/$name/data"
default_id_scheme = "$scheme"

[tls]
cert_file = "$DIR/$name/node.crt"
key_file = "$DIR/$name/node.key"
trust_bundle = ["$DIR/trust/england-ca.crt", "$DIR/trust/victoria-ca.crt"]
crl_files = ["$DIR/trust/england.crl", "$DIR/trust/victoria.crl"]

[api]
listen = "127.0.0.1:$(port_of "$name")"
clients = [
  { identity = "spiffe://$(domain_of "$name")/client/portal", roles = ["records", "lookup"] },
]

[metrics]
listen = "127.0.0.1:$(metrics_port_of "$name")"

[federation]
default_deadline_ms = 2000
EOF
    shift 3
    cat
  } >"$DIR/$name/node.toml"
  chmod 0644 "$DIR/$name/node.toml"
  "$PW" config check --config "$DIR/$name/node.toml" >/dev/null
}

write_config surrey "Surrey County Council" nhs <<EOF
$(key_set england)
$(key_set border)
$(peer brighton england "Brighton & Hove City Council")
$(peer melbourne border "City of Melbourne")
EOF
write_config brighton "Brighton & Hove City Council" nhs <<EOF
$(key_set england)
$(key_set border)
$(peer surrey england "Surrey County Council")
$(peer melbourne border "City of Melbourne")
EOF
write_config melbourne "City of Melbourne" vic-crn <<EOF
$(key_set border)
$(peer surrey border "Surrey County Council")
$(peer brighton border "Brighton & Hove City Council")
EOF

for name in "${NODES[@]}"; do
  start_node "$name"
done

import() {
  local name=$1 from=$2 kind
  for kind in organisations practitioners persons involvements; do
    "$PW" import "$kind" --config "$DIR/$name/node.toml" --file "$from/$kind.csv" --quiet >/dev/null
  done
  log "$name: imported $from"
}
import surrey "$EXAMPLES"
import brighton "$EXAMPLES/brighton"
import melbourne "$EXAMPLES/melbourne"

cat <<EOF
federation-up: three councils are running (API, metrics, identity):
  surrey     127.0.0.1:$SURREY_PORT  http://127.0.0.1:$SURREY_METRICS/metrics  $(identity_of surrey)
  brighton   127.0.0.1:$BRIGHTON_PORT  http://127.0.0.1:$BRIGHTON_METRICS/metrics  $(identity_of brighton)
  melbourne  127.0.0.1:$MELBOURNE_PORT  http://127.0.0.1:$MELBOURNE_METRICS/metrics  $(identity_of melbourne)
Ask Surrey who is working with Amelia, across all three:
  $PW lookup --config $DIR/surrey/node.toml --as PR-004 --basis child-safeguarding \\
    --reason "s.47 enquiry after a school referral" --given Amelia --family Smith-Jones --dob 2015-03-14
Stop them: $HERE/federation-down.sh $DIR
EOF
