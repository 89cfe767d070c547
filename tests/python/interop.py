#!/usr/bin/env python3
"""An independent client's check of a running Patchwork node.

Uses nothing of the Rust code: Python stubs are generated at run time from
the .proto files alone (python -m grpc_tools.protoc), and the client speaks
gRPC over TLS with grpcio (BoringSSL), presenting the node's own certificate
and key (the identity the patchwork CLI uses on the node's machine) and
trusting the node's trust bundle. It checks:

  1. grpc.health.v1.Health reports the node, and the Patchwork services,
     SERVING;
  2. server reflection lists the Patchwork services (and can describe
     Directory.Lookup from what it serves);
  3. Directory.Lookup of Amelia Smith-Jones (deploy/examples) returns her
     current practitioners and not the ended involvement;
  4. a client without a certificate is refused.

Usage (tests/python/run.sh sets the node up):
  python interop.py --config node.toml --patchwork path/to/patchwork --proto proto/
Exit status 0 if every check passed, 1 otherwise.
"""

import argparse
import glob
import importlib
import json
import os
import subprocess
import sys
import tempfile
import tomllib

# grpcio logs every refused handshake to stderr; the checks report what matters.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc  # noqa: E402

# What deploy/examples says Amelia's team is: the child-protection social
# worker and the school nurse; the health visiting ended in 2020.
EXPECTED_PRACTITIONERS = {"Sam Okafor", "Rosie Hughes"}
PATCHWORK_SERVICES = ("patchwork.v1.Directory", "patchwork.v1.Admin", "patchwork.v1.Federation")


def generate_stubs(proto_dir: str, out_dir: str) -> None:
    files = sorted(glob.glob(os.path.join(proto_dir, "patchwork", "v1", "*.proto")))
    if not files:
        sys.exit(f"error: no .proto files under {proto_dir}/patchwork/v1")
    command = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
        f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *files,
    ]
    subprocess.run(command, check=True)
    sys.path.insert(0, out_dir)


def node_material(config_path: str, patchwork: str):
    """The address, the CLI's certificate and key, the trust bundle and a DNS
    name in the node's certificate, all from the node's config."""
    with open(config_path, "rb") as f:
        config = tomllib.load(f)
    base = os.path.dirname(os.path.abspath(config_path))

    def path(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(base, p)

    def read(p: str) -> bytes:
        with open(path(p), "rb") as f:
            return f.read()

    tls = config["tls"]
    trust = b"".join(read(p) for p in tls["trust_bundle"])
    host, port = config["api"]["listen"].rsplit(":", 1)
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    inspected = subprocess.run(
        [patchwork, "cert", "inspect", path(tls["cert_file"]), "--json"],
        check=True, capture_output=True, text=True,
    )
    dns_names = json.loads(inspected.stdout)["dns_names"]
    if not dns_names:
        sys.exit("error: the node's certificate has no DNS name to check it by")
    return f"{host}:{port}", read(tls["cert_file"]), read(tls["key_file"]), trust, dns_names[0]


class Checks:
    def __init__(self):
        self.failed = []

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        print(f"{'PASS' if ok else 'FAIL'}  {name}{': ' + detail if detail else ''}", flush=True)
        if not ok:
            self.failed.append(name)

    def run(self, name: str, fn) -> None:
        try:
            ok, detail = fn()
        except grpc.RpcError as e:
            ok, detail = False, f"{e.code().name}: {e.details()}"
        except Exception as e:  # an independent client reports, it does not crash
            ok, detail = False, f"{type(e).__name__}: {e}"
        self.check(name, ok, detail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the node's node.toml")
    parser.add_argument("--patchwork", required=True, help="the patchwork binary (for cert inspect)")
    parser.add_argument("--proto", required=True, help="the proto/ folder")
    args = parser.parse_args()

    address, cert, key, trust, server_name = node_material(args.config, args.patchwork)
    stubs = tempfile.mkdtemp(prefix="patchwork-stubs-")
    generate_stubs(args.proto, stubs)
    common_pb2 = importlib.import_module("patchwork.v1.common_pb2")
    directory_pb2 = importlib.import_module("patchwork.v1.directory_pb2")
    directory_grpc = importlib.import_module("patchwork.v1.directory_pb2_grpc")
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
    from google.protobuf.descriptor_pool import DescriptorPool

    options = [("grpc.ssl_target_name_override", server_name)]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=trust, private_key=key, certificate_chain=cert
    )
    channel = grpc.secure_channel(address, credentials, options=options)
    checks = Checks()
    print(f"node {address}, checked as TLS name {server_name!r}", flush=True)

    def health():
        stub = health_pb2_grpc.HealthStub(channel)
        statuses = {}
        for service in ("",) + PATCHWORK_SERVICES:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            statuses[service or "(node)"] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return all(s == "SERVING" for s in statuses.values()), json.dumps(statuses)

    def reflection():
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        missing = [s for s in PATCHWORK_SERVICES + ("grpc.health.v1.Health",) if s not in services]
        lookup = DescriptorPool(database).FindServiceByName("patchwork.v1.Directory").FindMethodByName("Lookup")
        described = lookup.input_type.full_name == "patchwork.v1.LookupRequest"
        detail = f"lists {sorted(services)}"
        if missing:
            detail += f"; missing {missing}"
        return not missing and described, detail

    def lookup():
        stub = directory_grpc.DirectoryStub(channel)
        request = directory_pb2.LookupRequest(
            subject=common_pb2.Demographics(
                given_name="Amelia", family_name="Smith-Jones",
                date_of_birth=common_pb2.Date(year=2015, month=3, day=14),
            ),
            purpose=common_pb2.Purpose(
                lawful_basis=common_pb2.LAWFUL_BASIS_CHILD_SAFEGUARDING,
                reason="s.47 enquiry after a school referral",
            ),
            requester=common_pb2.Requester(practitioner_id="PR-004"),
            local_only=True,
        )
        reply = stub.Lookup(request, timeout=10)
        if len(reply.answers) != 1:
            return False, f"{len(reply.answers)} answers, expected this node's only"
        answer = reply.answers[0]
        outcome = directory_pb2.NodeOutcome.Name(answer.outcome)
        names = {
            i.practitioner.name for i in answer.involvements if i.WhichOneof("contact") == "practitioner"
        }
        ok = outcome == "NODE_OUTCOME_MATCHED" and names == EXPECTED_PRACTITIONERS
        return ok, f"{outcome}, practitioners {sorted(names)}, lookup {reply.lookup_id}"

    def refuses_anonymous():
        anonymous = grpc.secure_channel(
            address, grpc.ssl_channel_credentials(root_certificates=trust), options=options
        )
        try:
            directory_grpc.DirectoryStub(anonymous).Lookup(directory_pb2.LookupRequest(), timeout=10)
        except grpc.RpcError as e:
            return e.code() == grpc.StatusCode.UNAVAILABLE, f"refused: {e.code().name}"
        finally:
            anonymous.close()
        return False, "a client without a certificate was answered"

    checks.run("grpc.health.v1.Health reports SERVING", health)
    checks.run("server reflection lists the services", reflection)
    checks.run("Directory.Lookup returns the expected practitioners", lookup)
    checks.run("a client without a certificate is refused", refuses_anonymous)
    channel.close()
    if checks.failed:
        print(f"{len(checks.failed)} check(s) failed: {', '.join(checks.failed)}", flush=True)
        return 1
    print("all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
