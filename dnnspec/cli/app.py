"""`dnnspec` command line: a thin layer over the Python API (`dnnspec.api`).

The parser and the dispatch: `--help` and a usage error cost argparse alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from dnnspec.cli.commands import (
    cmd_check,
    cmd_compile,
    cmd_eval,
    cmd_export,
    cmd_fmt,
    cmd_generate,
    cmd_inspect,
    cmd_plot,
    cmd_predict,
    cmd_train,
    cmd_tune,
)
from dnnspec.cli.common import INTERRUPTED, OUTPUT_CLOSED, SPEC_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dnnspec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def spec_command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("spec", help="path to a .dnn spec")
        p.add_argument(
            "--set", action="append", metavar="NAME=VALUE", help="override a param (repeatable)"
        )
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    spec_command("check", "validate a spec and show each layer's shape, parameters and FLOPs")
    p = spec_command("train", "train a spec and write model.onnx and the run directory")
    p.add_argument("--out", help="run directory (default: runs/<spec name>[-n])")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    p.add_argument(
        "--runtime",
        metavar="NAME",
        help="the backend that trains: onnxruntime, openvino, openvino_bf16, or auto (the "
        "faster, measured once per spec and machine); default: the spec's runtime, else "
        "onnxruntime",
    )
    p.add_argument("--epochs", type=int, help="override the spec's epoch count")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="data-parallel workers sharing each batch (default: 1)",
    )
    p.add_argument(
        "--backend",
        choices=["mpi", "ray"],
        default="mpi",
        help="what starts the --workers: MPI's launcher on this machine (default), or Ray "
        "actors on a local Ray or the cluster at --address",
    )
    p.add_argument("--address", help="Ray cluster address (with --backend ray)")
    p.add_argument(
        "--checkpoint-every",
        metavar="N|Ts",
        default="60s",
        help="checkpoint every N epochs, or at most every T seconds (30s, 2m); always at the "
        "end, on early stop, Ctrl-C and divergence (default: 60s)",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="pause after epoch N (the schedule still spans the whole run); --resume continues",
    )
    p.add_argument(
        "--no-plot", action="store_true", help="do not draw curves.png (drawn with matplotlib)"
    )
    p = spec_command("tune", "run the spec's search section: trials, a results table, best.dnn")
    p.add_argument("--out", help="search directory (default: runs/<spec name>-tune[-n])")
    p.add_argument("--workers", type=int, help="trials run at once (default: the cores)")
    p.add_argument("--trials", type=int, help="at most this many trials (caps the method's own)")
    p.add_argument("--epochs", type=int, help="override the spec's epoch count in every trial")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--address", help="Ray cluster address (with --backend ray)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier search in --out")
    p = sub.add_parser("fmt", help="rewrite .dnn files in the canonical layout (comments kept)")
    p.add_argument("files", nargs="+", help=".dnn files, or directories to search for them")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if any would")
    p.add_argument("--diff", action="store_true", help="print the changes as a diff; exit 1 if any")
    p = sub.add_parser(
        "inspect", help="show what is inside an .onnx file, a run or a spec's graphs"
    )
    p.add_argument("path", help="an .onnx file, a run directory or a .dnn spec")
    p.add_argument("--graph", choices=["model", "train", "eval"], default="model",
                   help="which graph of a run or spec --dot/--svg/--png draws")  # fmt: skip
    p.add_argument("--dot", metavar="FILE", help="write the graph as Graphviz DOT")
    p.add_argument("--svg", metavar="FILE", help="draw the graph as SVG (needs Graphviz)")
    p.add_argument("--png", metavar="FILE", help="draw the graph as PNG (needs Graphviz)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("plot", help="draw learning curves of one or more runs as a PNG")
    p.add_argument("runs", nargs="+", help="run directories written by `dnnspec train`")
    p.add_argument(
        "--out", help="PNG to write (default: RUN/curves.png, or curves.png for several)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = spec_command("compile", "write train_step/eval_step/model ONNX graphs without training")
    p.add_argument("--out", required=True, help="output directory")
    p = sub.add_parser(
        "export", help="write a run's (or a spec's untrained) model for other runtimes, checked"
    )
    p.add_argument("source", help="a run directory, or a .dnn spec (its initialised model)")
    p.add_argument(
        "--out", required=True, help="the .onnx file (with --train: a directory) to write"
    )
    p.add_argument(
        "--opset",
        type=int,
        help="ONNX opset, 17 to the newest onnxruntime loads (default: the lowest the model needs)",
    )
    p.add_argument(
        "--outputs",
        help="the model's outputs to write, of logits,probabilities,labels,class_names "
        "(default: logits, the model's own)",
    )
    p.add_argument(
        "--fp16", action="store_true", help="weights and compute in float16, float32 inputs/outputs"
    )
    p.add_argument(
        "--train", action="store_true", help="export the train and eval steps and their state"
    )
    p.add_argument(
        "--web",
        action="store_true",
        help="write a static site into --out that trains the model in the browser",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    for name, help in (
        ("eval", "evaluate a trained run on its validation data, or on a data file"),
        ("predict", "run a trained model on inputs from .npy/.npz/.csv/.parquet or images"),
    ):
        p = sub.add_parser(name, help=help)
        p.add_argument("run", help="run directory written by `dnnspec train`")
        p.add_argument(
            "--runtime",
            metavar="NAME",
            default="onnxruntime",
            help="the backend that runs the model: onnxruntime (default), openvino, "
            "openvino_bf16, or auto (the one training measured faster for its spec here)",
        )
        if name == "eval":
            p.add_argument(
                "data", nargs="?", help="evaluate this .npz/.csv (as the spec's data file reads)"
            )
        if name == "predict":
            p.add_argument(
                "input",
                nargs="*",
                help="inputs: .npy, .npz (array x), .csv or .parquet; or image files, each "
                "printed with its class name and probability; for a model trained on texts, "
                "text files (one text per line, or a CSV's --text-column)",
            )
            p.add_argument(
                "--text",
                action="append",
                default=[],
                help="a text to classify, for a model trained on texts (repeatable)",
            )
            p.add_argument(
                "--text-column",
                default="text",
                help="the column of texts in a CSV given to a model trained on texts "
                "(default: text)",
            )
            p.add_argument("--out", help="write predictions to .npy or .csv")
            p.add_argument(
                "--proba",
                action="store_true",
                help="class name and probabilities: a CSV `class,p_<name>...` with a header",
            )
            p.add_argument(
                "--drop-target",
                action="store_true",
                help="the input still holds the target column, as the training CSV did",
            )
        p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser(
        "generate",
        help="sample text from a model trained on the text dataset, or decode a prompt "
        "through a seq2seq model",
    )
    p.add_argument("run", help="run directory written by `dnnspec train`")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--tokens", type=int, default=100, help="characters to sample (default 100)")
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="divide the scores by T before sampling; 0 picks the most likely (default 1)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


COMMANDS = {
    "check": cmd_check,
    "train": cmd_train,
    "tune": cmd_tune,
    "fmt": cmd_fmt,
    "inspect": cmd_inspect,
    "plot": cmd_plot,
    "compile": cmd_compile,
    "export": cmd_export,
    "eval": cmd_eval,
    "predict": cmd_predict,
    "generate": cmd_generate,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # `train --workers` runs it again
    try:
        code = _run(args)
        sys.stdout.flush()  # a reader that left shows here, not as a traceback at exit
    except BrokenPipeError:
        return _output_closed()
    return code


def _output_closed() -> int:
    """The reader of our output left (`dnnspec inspect --json | head`): stop quietly with
    the status of a program stopped by SIGPIPE; what is still buffered goes nowhere."""
    with contextlib.suppress(OSError, ValueError):  # not a file (captured): nothing to flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return OUTPUT_CLOSED


def _run(args: argparse.Namespace) -> int:
    """The command, its diagnostics rendered (exit 2); rich and the diagnostics are
    imported only now, so that `--help` and usage errors cost argparse alone."""
    from rich.console import Console

    from dnnspec.errors import DiagnosticError

    console = Console(highlight=False, soft_wrap=True)
    try:
        return COMMANDS[args.command](args, console)
    except DiagnosticError as exc:
        if getattr(args, "json", False):
            print(exc.to_json())
        else:
            print(exc.render(), file=sys.stderr)
        return SPEC_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # onnxruntime's are plain Exceptions: only allocation is ours
        if not isinstance(exc, MemoryError) and "Failed to allocate" not in str(exc):
            raise
        print(
            "error: out of memory: this machine could not hold what the command needed; "
            "a smaller batch or smaller layers need less",
            file=sys.stderr,
        )
        return SPEC_ERROR
