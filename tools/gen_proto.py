"""Regenerate the gRPC Python code in appliance/api/ from proto/ (needs the `dev` extra: grpcio-tools).

The generated files are committed so the appliance needs no protoc at run time. protoc writes absolute imports
(`from scanside.v1 import ...`); they are rewritten to relative ones so the code lives inside the `appliance`
package. `tests/test_api_codegen.py` fails when the committed code is stale.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "appliance" / "api"
PROTOS = ["scanside/v1/appliance.proto"]


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + [str(PROTO_ROOT / p) for p in PROTOS]) != 0:
        raise SystemExit("protoc failed")
    written = sorted(p for p in out.rglob("*") if p.suffix in (".py", ".pyi"))
    for path in written:
        text = re.sub(r"^from scanside\.v1 import ", "from . import ", path.read_text(), flags=re.M)
        path.write_text(text)
    for pkg in {p.parent for p in written} | {out / "scanside"}:
        (pkg / "__init__.py").touch()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        target = OUT / "scanside"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(Path(tmp) / "scanside", target)
    print(f"generated {target.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
