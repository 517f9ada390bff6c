"""One function per `dnnspec` command: its parsed arguments in, the API called, the result
rendered; each returns the process's exit code."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnnspec.cli.common import (
    CHANGES_NEEDED,
    INTERRUPTED,
    OK,
    SPEC_ERROR,
    dumps,
    jsonable,
    metrics_text,
    overrides,
    show_warnings,
    spec_of,
)

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console

    from dnnspec.api import Interrupted, Model, Spec


def cmd_check(args: argparse.Namespace, console: Console) -> int:
    """The report, then (exit 2) the diagnostic `train` would raise for the data (with
    --json only the diagnostic, so that stdout holds one JSON document)."""
    from dnnspec.api import check_data, check_spec
    from dnnspec.check.report import check_json, render_check
    from dnnspec.errors import DiagnosticError

    spec = spec_of(args)
    typed = check_spec(spec)
    show_warnings(typed.warnings)
    refused: DiagnosticError | None = None
    try:
        columns = check_data(spec)
    except DiagnosticError as exc:
        refused = exc
        preprocess = spec.train is not None and bool(spec.train.preprocess)
        columns = {"error": exc.diagnostics[0].message} if preprocess else None
    if args.json and refused is None:
        print(dumps(check_json(typed, columns)))
    elif not args.json:
        render_check(typed, console, columns)
    if refused is not None:
        raise refused
    return OK


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    from dnnspec.api import FOLLOWER, Interrupted, train
    from dnnspec.cli.progress import JsonReporter, ProgressReporter
    from dnnspec.errors import error

    if args.resume and not args.out:
        raise error("--resume needs the run directory: --out DIR")
    if args.resume and args.overwrite:
        raise error(
            "--resume and --overwrite contradict each other",
            help="--resume continues the run in --out; --overwrite replaces it",
        )
    spec = spec_of(args)
    from dnnspec.api import launch_workers

    launched = launch_workers(spec, args.workers, args.argv, args.out, args.backend, args.address)
    if launched is not None:
        return launched
    reporter: JsonReporter | ProgressReporter = (
        JsonReporter() if args.json else ProgressReporter(console)
    )
    try:
        result = train(
            spec,
            out=args.out,
            device=args.device,
            epochs=args.epochs,
            overwrite=args.overwrite,
            resume=args.resume,
            reporter=reporter,
            checkpoint_every=args.checkpoint_every,
            stop_after=args.stop_after,
            plot=False if args.no_plot else None,
            runtime=args.runtime,
        )
    except Interrupted as stop:
        print(_interrupted(args, spec, stop), file=sys.stderr)
        return INTERRUPTED
    finally:
        if isinstance(reporter, ProgressReporter):
            reporter.stop()
    if result.stopped == FOLLOWER:  # a worker of --workers N: the leader reports the run
        return OK
    summary = {
        "run_dir": str(result.run_dir),
        "epochs": result.epochs,
        "steps": result.steps,
        "stopped": result.stopped,
        "seconds": round(result.seconds, 3),
        "cpu_seconds": round(result.cpu_seconds, 3),
        "metrics": result.metrics,
        "best": result.best,
        "model": str(result.paths["model"]),
        "warnings": [d.model_dump(mode="json") for d in getattr(reporter, "warnings", [])],
    }
    if args.json:
        print(dumps(summary))
        return OK
    shown = metrics_text(result.best, skip=("epoch", "step"))
    console.print(
        f"[bold]done[/bold] ({result.stopped}) in {result.seconds:.1f}s, {result.steps} steps"
    )
    which = "best epoch" if spec.train and spec.train.early_stop else "epoch"
    console.print(f"{which} {result.best.get('epoch', result.epochs)}: {shown}", highlight=False)
    tested = {k: v for k, v in result.metrics.items() if k.startswith("test_")}
    if tested:
        console.print(f"test (once, model.onnx's weights): {metrics_text(tested)}", highlight=False)
    console.print(f"wrote {result.paths['model']} and the run in {result.run_dir}/")
    return OK


def _interrupted(args: argparse.Namespace, spec: Spec, stop: Interrupted) -> str:
    """What Ctrl-C left behind, and the command that carries on from it."""
    run_dir = stop.run_dir
    again = ["dnnspec", "train", args.spec, "--out", str(run_dir)]
    for pair in args.set or []:
        again += ["--set", pair]
    again += ["--epochs", str(args.epochs)] if args.epochs else []
    again += ["--device", args.device] if args.device != "auto" else []
    again += ["--runtime", args.runtime] if args.runtime else []
    again += ["--checkpoint-every", args.checkpoint_every] if args.checkpoint_every != "60s" else []
    again += ["--stop-after", str(args.stop_after)] if args.stop_after else []
    again += ["--workers", str(args.workers)] if args.workers != 1 else []
    again += ["--backend", args.backend] if args.backend != "mpi" else []
    again += ["--address", args.address] if args.address else []
    if not stop.resumable:
        return (
            f"interrupted in epoch {stop.epoch + 1} before any epoch finished: nothing was "
            f"saved to resume from, and {run_dir}/model.onnx holds the untrained weights.\n"
            f"start again with: {shlex.join([*again, '--overwrite'])}"
        )
    if stop.epoch == 0:
        which = "untrained"
    elif spec.train and spec.train.early_stop:
        which = "best epoch's"
    else:
        which = "last finished epoch's"
    return (
        f"interrupted in epoch {stop.epoch + 1}; {run_dir}/model.onnx holds the {which} "
        f"weights.\ncontinue with: {shlex.join([*again, '--resume'])}"
    )


def cmd_tune(args: argparse.Namespace, console: Console) -> int:
    from dnnspec.api import TuneInterrupted, tune
    from dnnspec.errors import error
    from dnnspec.tune.report import TuneProgress, render_results, results_json

    if args.resume and not args.out:
        raise error("--resume needs the search directory: --out DIR")
    if args.resume and args.overwrite:
        raise error("--resume and --overwrite contradict each other", help="choose one")
    progress = None if args.json else TuneProgress(console)
    try:
        result = tune(
            args.spec,
            out=args.out,
            workers=args.workers,
            trials=args.trials,
            epochs=args.epochs,
            device=args.device,
            backend=args.backend,
            address=args.address,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=progress,
            **overrides(args.set or []),
        )
    except TuneInterrupted as stop:
        if progress is not None:
            progress.stop()
        again = ["dnnspec tune", args.spec, "--out", str(stop.out), "--resume"]
        again += [f"--set {x}" for x in args.set or []]
        for flag in ("workers", "trials", "epochs"):
            if getattr(args, flag):
                again.append(f"--{flag} {getattr(args, flag)}")
        print(
            "search interrupted; finished trials are kept.\ncontinue with: " + " ".join(again),
            file=sys.stderr,
        )
        return INTERRUPTED
    if progress is not None:
        progress.stop()
    if args.json:
        print(json.dumps(results_json(result), indent=2))
    else:
        render_results(result, console)
    return OK


def _spec_files(paths: Sequence[str]) -> list[Path]:
    """The files named, with every `.dnn` file under a named directory."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        found += sorted(path.rglob("*.dnn")) if path.is_dir() else [path]
    return found


def cmd_fmt(args: argparse.Namespace, console: Console) -> int:
    import difflib

    from dnnspec.api import format_file
    from dnnspec.errors import DiagnosticError

    results, problems = [], []
    for path in _spec_files(args.files):
        try:
            results.append(format_file(path))
        except DiagnosticError as exc:
            problems.append(exc)
    changed = [r for r in results if r.changed]
    for result in changed:
        if args.diff:
            name = str(result.path)
            sys.stdout.writelines(
                difflib.unified_diff(
                    result.original.splitlines(True), result.text.splitlines(True), name, name
                )
            )
        elif args.check:
            print(f"would reformat {result.path}")
        else:
            result.write()
            print(f"reformatted {result.path}")
    for problem in problems:
        print(problem.render(), file=sys.stderr)
    if problems:
        return SPEC_ERROR
    unchanged = len(results) - len(changed)
    if not args.diff:
        verb = "would be reformatted" if args.check else "reformatted"
        print(f"{len(changed)} file(s) {verb}, {unchanged} already formatted", file=sys.stderr)
    return CHANGES_NEEDED if (args.check or args.diff) and changed else OK


def _count(n: int) -> str:
    return f"{n:,}"


def cmd_inspect(args: argparse.Namespace, console: Console) -> int:
    from dnnspec.api import draw_graph, inspect

    summaries = inspect(args.path)
    drawn = [
        str(draw_graph(args.path, out, args.graph)) for out in (args.dot, args.svg, args.png) if out
    ]
    if args.json:
        print(json.dumps({"graphs": [g.as_json() for g in summaries], "drawn": drawn}, indent=2))
        return OK
    for g in summaries:
        opsets = ", ".join(f"{d} {v}" for d, v in g.opset.items())
        console.print(
            f"[bold]{g.path}[/bold]  graph {g.graph!r}, opset {opsets}, IR {g.ir_version}"
        )
        console.print(f"  producer: {g.producer or '-'}")
        for label, values in (("inputs", g.inputs), ("outputs", g.outputs)):
            shown = [
                v.text() for v in values if v.name not in g.parameters and v.name not in g.state
            ]
            hidden = len(values) - len(shown)
            more = f" (and {hidden} carried tensors)" if hidden else ""
            console.print(f"  {label}: " + ", ".join(shown) + more)
        console.print(
            f"  nodes: {_count(g.nodes)}; initializers: {_count(g.initializers)} "
            f"({_count(g.initializer_elements)} values)"
        )
        if g.parameters:
            console.print(
                f"  parameters: {len(g.parameters)} tensors, {_count(g.parameter_elements)} values"
            )
        if g.state:
            kinds = sorted(set(g.state.values()))
            console.print(
                f"  optimizer state: {len(g.state)} tensors ({', '.join(kinds)}), "
                f"{_count(g.state_elements)} values"
            )
        if g.node_kinds:
            console.print(
                "  nodes by role: " + ", ".join(f"{k} {v}" for k, v in g.node_kinds.items())
            )
        console.print("  ops: " + ", ".join(f"{op} {n}" for op, n in g.ops.items()))
        shown_meta = {k: v if len(v) <= 80 else v[:77] + "..." for k, v in g.metadata.items()}
        for key, value in shown_meta.items():
            console.print(f"  {key} = {value}", highlight=False)
    for path in drawn:
        console.print(f"wrote {path}")
    return OK


def cmd_plot(args: argparse.Namespace, console: Console) -> int:
    from dnnspec.api import plot

    out = plot(args.runs, args.out)
    if args.json:
        print(json.dumps({"plot": str(out)}))
    else:
        console.print(f"wrote {out}")
    return OK


def cmd_compile(args: argparse.Namespace, console: Console) -> int:
    from dnnspec.api import compile_details, save

    compiled = compile_details(spec_of(args))
    program = compiled.program
    show_warnings(program.typed.warnings)
    paths = save(program, args.out)
    if args.json:
        payload: dict[str, Any] = {k: str(v) for k, v in paths.items()}
        payload["warnings"] = [d.model_dump(mode="json") for d in program.typed.warnings]
        payload["read_data"] = compiled.read_data
        payload["from_data"] = compiled.from_data
        print(dumps(payload))
    else:
        for name, path in paths.items():
            console.print(f"wrote {path} ({name})")
        if compiled.read_data:
            console.print(f"read the data: {compiled.read_data}")
        else:
            console.print("the data was not read: the spec declares every shape")
        for what in compiled.from_data:
            console.print(f"not recorded without the data: {what}")
    return OK


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from dnnspec.api import export

    outputs = args.outputs.split(",") if args.outputs is not None else None
    result = export(args.source, args.out, args.opset, args.fp16, args.train, outputs, args.web)
    if args.json:
        print(dumps(result.as_json()))
        return OK
    for kind, path in result.files.items():
        console.print(f"wrote {path} ({kind})")
    state = "trained" if result.trained else "untrained (initialised)"
    console.print(f"{result.opset_text()}, {result.precision}, {state}")
    for role in result.outputs:
        how = f" ({role.how})" if role.how else ""
        console.print(f"output {role.name}: {role.role}{how}", highlight=False)
    console.print(
        f"every graph passed onnx.checker (full check) and shape inference at opset {result.opset}"
    )
    for check in result.checks:
        console.print(check.text())
    for note in result.notes:
        console.print(f"note: {note}")
    return OK


def cmd_eval(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from dnnspec.api import load

    model = load(args.run, runtime=args.runtime)
    metrics = model.evaluate(args.data)
    show_warnings(model.warnings)
    if args.json:
        print(dumps(metrics))
        return OK
    counts = {k: metrics.pop(k) for k in list(metrics) if k.endswith("confusion")}
    console.print(metrics_text(metrics), highlight=False)
    outputs = {f"{o.name}_confusion": o for o in model.file.outputs}
    for key, rows in counts.items():
        name = None if key == "confusion" else outputs[key].name
        labels = model.class_names(name) or [str(i) for i in range(len(rows))]
        which = "" if key == "confusion" else f" of output '{key.removesuffix('_confusion')}'"
        title = f"confusion{which} (rows: true class, columns: predicted)"
        table = Table(title=title, box=None)
        table.add_column("")
        for label in labels:
            table.add_column(label, justify="right")
        for label, row in zip(labels, rows, strict=True):
            table.add_row(label, *map(str, row))
        console.print(table)
    return OK


def _named(ids: list[Any], names: list[str]) -> list[Any]:
    """The class names of class ids (None stays None), per position for an output of a
    class per position."""
    return [
        _named(c, names) if isinstance(c, list) else None if c is None else names[c] for c in ids
    ]


def cmd_predict(args: argparse.Namespace, console: Console) -> int:
    from dnnspec.api import PREDICTION_FORMATS, load, proba_table, write_predictions
    from dnnspec.errors import error

    out = Path(args.out) if args.out else None
    model = load(args.run, runtime=args.runtime)
    show_warnings(model.warnings)
    if not model.file.named and out is not None and out.suffix not in PREDICTION_FORMATS:
        raise error(f"--out '{out}': predictions are written as .npy or .csv")
    paths = [Path(p) for p in args.input]
    if args.text or (model.file.meta.text and not model.file.meta.vocab):  # a text classifier
        return _predict_texts(args, console, model, paths)
    if not paths:
        raise error("predict needs an input file", help="dnnspec predict RUN FILE")
    if len(paths) > 1 or model.file.meta.image or model.file.meta.audio:
        return _predict_files(args, console, model, paths)
    pred = model.predict(paths[0], drop_target=args.drop_target)
    if isinstance(pred, dict):
        return _predict_outputs(args, console, model, out, pred)
    header, table = proba_table(model, pred) if args.proba else (None, pred)
    if out is not None:
        if args.proba and out.suffix == ".npy":
            table = model.probabilities(pred)  # an array holds numbers: the probabilities
        write_predictions(table, out, header if out.suffix == ".csv" else None)
    if args.json or out is None:
        payload: dict[str, Any] = {"predictions": jsonable(pred)}
        names = model.class_names()
        if names is not None:
            payload["classes"] = model.class_ids(pred)
            if names != [str(i) for i in range(len(names))]:
                payload["labels"] = _named(payload["classes"], names)
        if args.proba:
            payload["probabilities"] = jsonable(model.probabilities(pred))
            if names is not None:
                payload["class_names"] = names
            if names is not None and model.binary():  # one probability each: the positive's
                payload["positive"] = names[1]
        print(json.dumps(payload))
    else:
        console.print(f"wrote {len(pred)} predictions to {out}")
    return OK


def _predict_files(
    args: argparse.Namespace, console: Console, model: Any, paths: list[Path]
) -> int:
    """`predict RUN a.png b.jpg`: each file's class name and probability, one line each
    (with --json, one record per file), for a model with one class output."""
    from dnnspec.errors import error

    if args.out or args.proba or args.drop_target or model.file.named:
        raise error(
            "several input files are predicted one line each: --out, --proba and "
            "--drop-target take one file, and the model must have one output",
            help="pass one file, or drop those options",
        )
    names = model.class_names()
    if names is None:
        raise error(
            f"the model in '{args.run}' predicts values, not classes",
            help="pass one input file to get its values",
        )
    records: list[dict[str, Any]] = []
    for path in paths:
        pred = model.predict(path)
        wheres = [str(path)] if len(pred) == 1 else [f"{path}[{row}]" for row in range(len(pred))]
        records += _class_records(model, pred, names, "file", wheres)
    return _show_records(args, console, records, "file")


def _class_records(
    model: Any, pred: np.ndarray, names: list[str], key: str, wheres: list[str]
) -> list[dict[str, Any]]:
    """One record per row of `pred`: where it came from (under `key`), its class name and
    that class's probability (a binary output's one probability is the positive's); None
    for a row that is not finite."""
    binary = model.binary()
    records = []
    for where, cls, probs in zip(
        wheres, model.class_ids(pred), model.probabilities(pred), strict=True
    ):
        p = None
        if cls is not None:
            p = float(probs[cls]) if not binary else float(probs[0] if cls else 1 - probs[0])
        records.append({key: where, "class": None if cls is None else names[cls], "probability": p})
    return records


def _show_records(
    args: argparse.Namespace, console: Console, records: list[dict[str, Any]], key: str
) -> int:
    """The records as JSON (--json), else one line each: where, class, probability."""
    if args.json:
        print(json.dumps({"predictions": records}))
        return OK
    for record in records:
        shown = "nan" if record["probability"] is None else f"{record['probability']:.4f}"
        console.print(f"{record[key]}  {record['class']}  {shown}", markup=False)
    return OK


def _predict_texts(
    args: argparse.Namespace, console: Console, model: Any, paths: list[Path]
) -> int:
    """`predict RUN --text "..."` or on text files (one text per line, or a CSV's
    --text-column): each text's class name and probability, one line each, tokenized by
    the run's tokenizer.json."""
    from dnnspec.errors import error

    if args.out or args.proba or args.drop_target or model.file.named:
        raise error(
            "texts are predicted one line each: --out, --proba and --drop-target do not "
            "apply, and the model must have one output",
            help="drop those options",
        )
    texts = [(text, text) for text in args.text]
    for path in paths:
        found = model.texts_of(path, args.text_column)
        texts += [(f"{path}:{row + 1}", text) for row, text in enumerate(found)]
    if not texts:
        raise error("no texts to predict", help='pass --text "..." or a text file')
    pred = model.predict(model.encode_texts([text for _, text in texts]))
    names = model.class_names() or [str(i) for i in range(pred.shape[-1])]
    records = _class_records(model, pred, names, "text", [where for where, _ in texts])
    return _show_records(args, console, records, "text")


def _predict_outputs(
    args: argparse.Namespace,
    console: Console,
    model: Model,
    out: Path | None,
    preds: dict[str, np.ndarray],
) -> int:
    """`predict` for a model with named outputs (`preds` by name): an .npz of one array per
    output or a CSV of `<output>_<i>` columns; the JSON has each output's predictions (and
    a class output's classes, labels when they are words, and with --proba probabilities)
    under its name."""
    from dnnspec.api import write_output_predictions
    from dnnspec.errors import error

    proba = {}
    if args.proba:  # each class output's probabilities replace its scores in the file
        proba = {
            name: model.probabilities(pred, name)
            for name, pred in preds.items()
            if model.has_probabilities(name)
        }
        if not proba:
            raise error(
                f"no output of the model in '{args.run}' predicts classes, so there are no "
                "probabilities",
                help="probabilities come from outputs trained with cross_entropy, nll or "
                "binary_cross_entropy",
            )
    if out is not None:
        write_output_predictions(preds | proba, out)
    if args.json or out is None:
        payload: dict[str, Any] = {}
        for info in model.file.outputs:
            pred = preds[info.name]
            entry: dict[str, Any] = {"predictions": jsonable(pred)}
            if info.name in proba:
                entry["probabilities"] = jsonable(proba[info.name])
            names = model.class_names(info.name)
            if names is not None:
                entry["classes"] = model.class_ids(pred, info.name)
                if names != [str(i) for i in range(len(names))]:
                    entry["labels"] = _named(entry["classes"], names)
            payload[info.name] = entry
        print(json.dumps({"outputs": payload}))
    else:
        samples = len(next(iter(preds.values())))
        console.print(f"wrote {samples} predictions of outputs {', '.join(preds)} to {out}")
    return OK


def cmd_generate(args: argparse.Namespace, console: Console) -> int:
    from dnnspec.api import load

    text = load(args.run).generate(args.prompt, args.tokens, args.temperature, args.seed)
    if args.json:
        print(json.dumps({"prompt": args.prompt, "text": text}))
    else:
        print(args.prompt + text)
    return OK
