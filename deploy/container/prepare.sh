#!/usr/bin/env bash
# Makes the config folders compose.yaml mounts: two regions' CAs, a key,
# CSR-signed certificate and node.toml for each council (named by its
# compose service, which is also the DNS name peers dial), CRLs and
# match-key secrets — the same steps as deploy/federation-up.sh, with
# container paths and ports.
#
# Usage: PATCHWORK=path/to/patchwork deploy/container/prepare.sh [DIR]
#        (DIR defaults to deploy/container/councils; it must not exist yet)
# Then:  docker compose -f deploy/container/compose.yaml up -d
#        (PATCHWORK_COUNCILS=DIR if DIR is not the default)
#
# The image runs as uid 65532 and the node refuses key files others can
# read, so the files must belong to 65532: run this as root, or afterwards
# `sudo chown -R 65532:65532 DIR`. DIR/ca holds the CAs' keys: in real life
# they live offline, on the CA operators' machines, never next to a node.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:-$HERE/councils}
PW=${PATCHWORK:-patchwork}
command -v "$PW" >/dev/null || { echo "error: PATCHWORK=$PW is not executable" >&2; exit 1; }
if [ -e "$OUT" ]; then
  echo "error: $OUT exists; prepare into a new folder" >&2
  exit 1
fi
umask 077
mkdir -p "$OUT/ca"

"$PW" ca init --dir "$OUT/ca/england" --trust-domain england.patchwork --name "England Patchwork CA" >/dev/null
"$PW" ca init --dir "$OUT/ca/victoria" --trust-domain vic.patchwork --name "Victoria Patchwork CA" >/dev/null
region() { [ "$1" = melbourne ] && echo victoria || echo england; }
domain() { [ "$1" = melbourne ] && echo vic.patchwork || echo england.patchwork; }
secret() { head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n'; }
england_secret=$(secret)
border_secret=$(secret)

peer() {
  cat <<TOML

[[federation.peers]]
identity = "spiffe://$(domain "$1")/node/$1"
name = "$2"
address = "$1:7443"
key_set = "$3"
purposes = ["child-safeguarding", "adult-safeguarding", "vital-interests"]
sensitivities = ["standard", "restricted"]
rate_limit_per_minute = 600
TOML
}

for name in surrey brighton melbourne; do
  dir=$OUT/$name
  mkdir -p "$dir/trust" "$dir/secrets"
  "$PW" cert request --dir "$dir" --node-id "$name" --trust-domain "$(domain "$name")" \
    --dns "$name" --dns localhost --ip 127.0.0.1 >/dev/null
  "$PW" ca sign --ca "$OUT/ca/$(region "$name")" --csr "$dir/node.csr" --out "$dir/node.crt" \
    --node-id "$name" --days 30 >/dev/null
  for ca in england victoria; do
    cp "$OUT/ca/$ca/ca.crt" "$dir/trust/$ca-ca.crt"
  done
  printf '%s' "$border_secret" >"$dir/secrets/border.key"
  [ "$name" = melbourne ] || printf '%s' "$england_secret" >"$dir/secrets/england.key"
done
for ca in england victoria; do
  "$PW" ca crl --ca "$OUT/ca/$ca" --out "$OUT/ca/$ca.crl" --days 7 >/dev/null
  for name in surrey brighton melbourne; do cp "$OUT/ca/$ca.crl" "$OUT/$name/trust/$ca.crl"; done
done

config() {
  local name=$1 display=$2 scheme=$3
  {
    cat <<TOML
# Made by deploy/container/prepare.sh; every key: deploy/node.example.toml.
# Paths are relative to this file (/etc/patchwork in the container).
[node]
display_name = "$display"
data_dir = "/var/lib/patchwork"
default_id_scheme = "$scheme"

[tls]
cert_file = "node.crt"
key_file = "node.key"
trust_bundle = ["trust/england-ca.crt", "trust/victoria-ca.crt"]
crl_files = ["trust/england.crl", "trust/victoria.crl"]

[api]
listen = "0.0.0.0:7443"
clients = [
  { identity = "spiffe://$(domain "$name")/client/portal", roles = ["records", "lookup"] },
]

[metrics]
listen = "0.0.0.0:9464"

[federation]
default_deadline_ms = 2000
TOML
    [ "$name" = melbourne ] || printf '\n[[federation.key_sets]]\nname = "england"\nsecret_file = "secrets/england.key"\n'
    printf '\n[[federation.key_sets]]\nname = "border"\nsecret_file = "secrets/border.key"\n'
    cat
  } >"$OUT/$name/node.toml"
  "$PW" config check --config "$OUT/$name/node.toml" >/dev/null
}
config surrey "Surrey County Council" nhs <<TOML
$(peer brighton "Brighton & Hove City Council" england)
$(peer melbourne "City of Melbourne" border)
TOML
config brighton "Brighton & Hove City Council" nhs <<TOML
$(peer surrey "Surrey County Council" england)
$(peer melbourne "City of Melbourne" border)
TOML
config melbourne "City of Melbourne" vic-crn <<TOML
$(peer surrey "Surrey County Council" border)
$(peer brighton "Brighton & Hove City Council" border)
TOML

chmod -R go+rX "$OUT"/*/trust "$OUT"/*/node.crt "$OUT"/*/node.toml
if [ "$(id -u)" = 0 ]; then
  chown -R 65532:65532 "$OUT/surrey" "$OUT/brighton" "$OUT/melbourne"
else
  echo "note: run 'sudo chown -R 65532:65532 $OUT/{surrey,brighton,melbourne}' so the container's user can read its key"
fi
echo "prepared $OUT; now: PATCHWORK_COUNCILS=$OUT docker compose -f $HERE/compose.yaml up -d"
