#!/usr/bin/env bash
# Regenerate the Python stubs of protos/ into sandboxd/api/_proto/ (or into the directory given as $1).
#   protos/generate.sh              # from the repo root or anywhere; uses $PYTHON or .venv/bin/python
# protoc writes `from sandboxd.v1 import ...`; the stubs live in the private package sandboxd.api._proto, so the
# import path is rewritten to `from sandboxd.api._proto.sandboxd.v1 import ...`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/sandboxd/api/_proto}
python=${PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || python=python3

mkdir -p "$out"
cd "$repo/protos"
protos=$(find sandboxd -name '*.proto' | sort)
# shellcheck disable=SC2086
"$python" -m grpc_tools.protoc -I . --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" $protos

for dir in "$out" $(cd "$out" && find sandboxd -type d | sort | sed "s|^|$out/|"); do
    [ -f "$dir/__init__.py" ] || : >"$dir/__init__.py"
done
# Generated code is not ours to type-check (mypy --strict would flag protoc's own output).
find "$out/sandboxd" -name '*.py' -o -name '*.pyi' | sort | while read -r file; do
    sed -i -E 's/^from sandboxd\.(v[0-9]+) import /from sandboxd.api._proto.sandboxd.\1 import /' "$file"
    case "$file" in *_pb2.pyi|*_pb2_grpc.py) sed -i '1i # mypy: ignore-errors' "$file";; esac
done
