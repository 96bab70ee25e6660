"""``faststyle export``: a style model as ONNX with dynamic batch, height and width."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="export a style model to ONNX",
        description=(
            "Export a style model to ONNX (input 'image' N×3×H×W RGB in [0,1], output 'stylized'; batch, height "
            "and width dynamic; each side 5 px or more, for the network's reflection padding). The file is written "
            "atomically; --verify runs it in ONNX Runtime first."
        ),
    )
    parser.add_argument("--model", required=True, help="model file or name (see `faststyle stylize --list`)")
    parser.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument(
        "--verify", action="store_true", help="compare ONNX Runtime with PyTorch at two sizes before writing"
    )
    parser.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from faststyle.export import export_onnx

    path, difference = export_onnx(args.model, args.onnx, opset=args.opset, verify=args.verify)
    checked = f"; ONNX Runtime matches PyTorch (max abs diff {difference:.2e})" if difference is not None else ""
    print(f"wrote {path}{checked}")
    return 0
