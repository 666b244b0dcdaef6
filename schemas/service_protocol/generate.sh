#!/usr/bin/env bash
# Regenerates protocol_pb2.py from protocol.proto (needs grpcio-tools; the result is committed).
set -euo pipefail
cd "$(dirname "$0")"
python -m grpc_tools.protoc -I. --python_out=. protocol.proto
