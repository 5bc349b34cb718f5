"""Regenerate the shop's gRPC stubs from shop.proto: `python -m l7scope.demo.shop.regen`.

Needs grpcio-tools (the `dev` extra). The stubs are committed; tests/demo/test_shop_proto.py
checks that they match the .proto.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO = "l7scope/demo/shop/shop.proto"


def src_root() -> Path:
    return Path(__file__).resolve().parents[3]


def protoc_args(out: Path) -> list[str]:
    return [f"-I{src_root()}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", PROTO]


def main() -> int:
    from grpc_tools import protoc  # type: ignore[import-untyped]

    return int(protoc.main(["protoc", *protoc_args(src_root())]))


if __name__ == "__main__":
    sys.exit(main())
