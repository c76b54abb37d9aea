"""The ``prunekit`` command line.

``prunekit prune MODEL --spec SPEC -o OUT`` runs the engine locally with a progress bar and a short
summary.  The client commands (``submit``, ``status``, ``wait``, ``download``, ``jobs``,
``cancel``) live in :mod:`prunekit.cli_service` so that this module stays free of web imports.

The server commands belong to the apps built on the engine: ``serve`` to :mod:`service.cli`,
``worker`` to :mod:`worker.cli`.  This package never imports them; they join the command through
the ``prunekit.commands`` entry-point group, each entry a ``register(subparsers)`` that adds its
subparser and handler.  Without the service extra (or the entry points), ``prunekit serve`` says
in one line what to install instead of printing a traceback.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_JOB_FAILED, EXIT_ERROR = 0, 1, 2

COMMANDS_GROUP = "prunekit.commands"
# Commands the service extra brings, with what `--help` says about them while it is missing.
SERVICE_COMMANDS = {
    "serve": "run the HTTP API",
    "worker": "run a Celery worker that executes queued jobs",
}

EPILOG = """examples:
  prunekit prune model.pt --spec spec.json -o model.pruned.pt
  prunekit prune weights.pt --arch zoo:resnet_mini --ratio 0.5 -o pruned.pt
  prunekit prune r50.pt --arch torchvision:resnet50 --ratio 0.3 -o r50.pruned.pt
  prunekit prune my-llama/ --spec '{"ratio": 0.3, "normalized_dims": "prune"}' -o my-llama-pruned/
  prunekit architectures
  prunekit prune model.pt --spec '{"importance": "taylor", "target": {"macs": 0.5}}' \
      --calibration data.safetensors -o model.pruned.pt
  prunekit prune model.pt --method unstructured --sparsity 0.5 --importance wanda \
      --calibration data.safetensors -o model.sparse.pt
spec fields: architecture, inputs, method (structured|unstructured), importance (structured:
l1|l2|bn_scale|random|taylor|gradprobe; unstructured: magnitude|wanda|gradprobe), ratio, target
({"macs"|"params": fraction}), sparsity, pattern (N:M), layers, channels (dim out|in), pruned_inputs
([[param, input channel], ...]), reorder_inputs, constrained, from_zeros, normalized_dims (keep|prune:
also the widths layer/RMS/group norms normalise, e.g. a transformer's residual), ignore, global_ranking,
round_to, min_channels, output_format (same|torchscript|export|state_dict|checkpoint), tolerance; with
calibration data: loss, batch_size, num_batches, holdout, reduction_factor, gradient_threshold,
recalibrate_bn, sweep. The calibration file (.safetensors) holds 'inputs' and optional 'targets'.
"""


def _spec_from_args(args: argparse.Namespace) -> dict:
    spec: dict = {}
    if args.spec:
        text = args.spec.strip()
        spec = json.loads(text) if text.startswith("{") else json.loads(Path(text).read_text())
    if args.ratio is not None:
        spec["ratio"] = args.ratio
    if args.arch:
        spec["architecture"] = args.arch
    if args.format:
        spec["output_format"] = args.format
    if args.importance:
        spec["importance"] = args.importance
    if getattr(args, "method", None):
        spec["method"] = args.method
    if getattr(args, "sparsity", None) is not None:
        spec["sparsity"] = args.sparsity
    if args.input_shape:
        spec["inputs"] = [{"shape": [int(s) for s in shp.split(",")], "dtype": "float32"} for shp in args.input_shape]
    return spec


def _cmd_prune(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from .errors import PruneKitError
    from .artifacts import ARTIFACT_NAMES, MANIFEST_NAME, REPORT_NAME, companion_name
    from .api import prune_to_dir

    console = Console(stderr=True)
    try:
        spec = _spec_from_args(args)
    except (OSError, json.JSONDecodeError) as exc:
        console.print(f"[red]error:[/red] cannot read the spec: {exc}")
        return 2
    out = Path(args.output)
    work = Path(tempfile.mkdtemp(prefix=".prunekit-", dir=out.parent if out.parent.exists() else None))
    try:
        with Progress(TextColumn("[bold]{task.fields[stage]:<8}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                      disable=args.quiet) as bar:
            task = bar.add_task("", total=1.0, stage="start")

            def on_progress(stage: str, fraction: float, message: str) -> None:
                bar.update(task, completed=fraction, stage=stage, description=message)

            result = prune_to_dir(args.model, spec, work, inputs_path=args.inputs, progress=on_progress,
                                  calibration_path=args.calibration)
        rep = result.report
        extra = ""
        if rep.output_format == "checkpoint":  # a folder, as uploaded: model.safetensors, config.json, manifest.json
            report_path = _place_checkpoint(work, out, args.report)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(work / ARTIFACT_NAMES[rep.output_format]), out)
            # Beside the model, named after it (prunekit.artifacts.companion_name: the service's rule too).
            report_path = Path(args.report) if args.report else out.with_name(companion_name(out.name, REPORT_NAME))
            shutil.move(str(work / REPORT_NAME), report_path)
        for name in ("sweep.json", "sweep.png"):
            if (work / name).exists():
                dest = out.with_name(companion_name(out.name, name))
                shutil.move(str(work / name), dest)
                extra += f", {name} {dest}"
        if (work / MANIFEST_NAME).exists():
            manifest = out.with_name(companion_name(out.name, MANIFEST_NAME))
            shutil.move(str(work / MANIFEST_NAME), manifest)
            extra += f", manifest {manifest}"
    except PruneKitError as exc:
        console.print(f"[red]error ({exc.code}):[/red] {exc}")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if not args.quiet:
        table = Table(title=f"pruned {args.model} → {out}")
        table.add_column("")
        table.add_column("before", justify="right")
        table.add_column("after", justify="right")
        table.add_column("change", justify="right")

        def row(name: str, a: int, b: int) -> None:
            change = f"{100.0 * (b - a) / a:+.1f}%" if a > 0 else ""
            table.add_row(name, f"{a:,}", f"{b:,}", change)

        row("parameters", rep.params_before, rep.params_after)
        if rep.macs_before > 0:
            row("MACs (batch 1)", rep.macs_before, rep.macs_after)
        if rep.file_size_before:
            row("file bytes", rep.file_size_before, rep.file_size_after)
        if rep.method == "structured":
            row("channels", rep.channels_before, rep.channels_before - rep.channels_removed)
        ev = rep.evaluation
        if ev:
            for key, label in (("accuracy", "held-out accuracy"), ("agreement", "agreement with original"),
                               ("loss", "held-out loss")):
                a, b = ev["original"].get(key), ev["pruned"].get(key)
                if b is not None:
                    a = 1.0 if a is None and key == "agreement" else a
                    fmt = (lambda v: f"{100 * v:.2f}%") if key != "loss" else (lambda v: f"{v:.4f}")
                    table.add_row(label, fmt(a), fmt(b), f"{100 * (b - a):+.2f} pt" if key != "loss" else f"{b - a:+.4f}")
        console.print(table)
        if rep.sparsity:
            sp = rep.sparsity
            console.print(f"sparsity reached {100 * sp['reached']:.1f}% of the eligible weights (target "
                          f"{100 * sp['target']:.1f}%{', pattern ' + sp['pattern'] if sp.get('pattern') else ''}); "
                          "dense shapes with exact zeros")
        if rep.target:
            t = rep.target
            console.print(f"target {t['metric']} {t['requested']}: reached {t['reached']:.3f}"
                          + ("" if t["met"] else f" (not met: {t.get('why', '')})"))
        if rep.inputs:
            i = rep.inputs
            if i.get("mode") == "constrained":
                console.print(f"input channels (constrained): {i['channels']} removed from their producer and "
                              f"{len(i['also_removed_from'])} more tensors")
            else:
                console.print(f"input channels: {len(i['consumers'])} consumers read {i['narrows']} narrows and "
                              f"{i['gathers']} gathers ({len(i['reordered'])} streams reordered); "
                              f"{sum(len(e['channels']) for e in i['removed_outright'])} unread channels removed outright")
        if rep.from_zeros:
            z = rep.from_zeros
            console.print(f"from_zeros: {z['removed']} of {z['candidates']} all-zero channels removed"
                          + (f"; kept in {', '.join(z['groups_kept'])}" if z["groups_kept"] else ""))
        if rep.normalized_dims and rep.normalized_dims.get("function_changed"):
            nd = rep.normalized_dims
            change = nd.get("output_change") or {}
            console.print(f"normalized_dims prune: {nd['ops_renormalised']} normalisations now over the kept channels; "
                          f"the function changed by design: output change vs the upload {change.get('rel_l2', 0):.3g} "
                          f"(relative L2), {change.get('max_rel', 0):.3g} (max relative); the check compared with that "
                          "reference")
        if rep.sweep:
            from .sweep import table as sweep_rows

            st = Table(title=f"sweep over {rep.sweep['parameter']}")
            for col in ("setting", "pruned", "accuracy", "loss", ""):
                st.add_column(col, justify="right" if col else "left")
            for r in sweep_rows(rep.sweep):
                st.add_row(*r)
            console.print(st)
        console.print(
            (f"groups pruned {rep.groups_pruned}/{rep.groups_found}; " if rep.method == "structured" else "")
            + "check max relative deviation "
            f"{rep.check.get('max_rel', 0):.2e} (tolerance {rep.check.get('tolerance')}); report {report_path}{extra}"
        )
        if rep.kept:
            console.print(f"{len(rep.kept)} weights keep all their output channels (\"kept\" in the report says why)")
        for w in rep.warnings:
            console.print(f"[yellow]warning:[/yellow] {w}")
    return 0


def _place_checkpoint(work: Path, out: Path, report: str | None) -> Path:
    """Move a checkpoint output's files into the folder ``out`` (created; files there are replaced)."""
    from .artifacts import REPORT_NAME

    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder (a checkpoint output is a folder)")
    out.mkdir(parents=True, exist_ok=True)
    report_path = Path(report) if report else out / REPORT_NAME
    for f in work.iterdir():
        if f.is_file():
            shutil.move(str(f), report_path if f.name == REPORT_NAME else out / f.name)
    return report_path


def _cmd_architectures(args: argparse.Namespace) -> int:
    from . import providers
    from .errors import PruneKitError
    from .registry import get_architecture, list_architectures

    if args.provider:
        if args.provider not in providers.PROVIDERS:
            print(f"unknown provider {args.provider!r}; providers: {', '.join(providers.PROVIDERS)}", file=sys.stderr)
            return EXIT_ERROR
        try:
            for name in providers.names(args.provider):
                print(name)
        except PruneKitError as exc:
            print(f"error ({exc.code}): {exc}", file=sys.stderr)
            return EXIT_ERROR
        return EXIT_OK
    for name in list_architectures():
        arch = get_architecture(name)
        shapes = ", ".join(str(i["shape"]) for i in arch.example_inputs)
        print(f"{name:28s} {shapes:20s} {arch.description}")
    print()
    print("by provider (names are built with random weights; state-dicts load into them):")
    for p in providers.status():
        if p["installed"]:
            count = ""
            try:
                count = f"{len(providers.names(p['prefix']))} names, " if p["prefix"] != "hf" else ""
            except PruneKitError:
                pass
            state = f"{count}'prunekit architectures {p['prefix']}' lists them" + (f"; {p['note']}" if p["note"] else "")
        else:
            state = f"not installed ({p['note'] or p['install']})"
        print(f"{p['form']:28s} {p['description']}: {state}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunekit",
        description="Structured pruning for PyTorch models: remove channels, keep the model working.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "prune",
        help="prune a model file locally",
        description="Prune MODEL (TorchScript, a torch.export .pt2 archive, or a state-dict with --arch) and "
        "write the pruned model to OUT in the same format (or the spec's output_format). Every prune is "
        "checked against the original with the removed channels masked out; a failed check writes nothing.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="model file: TorchScript (.pt), torch.export (.pt2), state-dict (.pt/.pth/.safetensors), "
                   "or a checkpoint folder (config.json + model.safetensors) or a zip/tar of one")
    p.add_argument("--spec", help="spec as a JSON file or inline JSON text")
    p.add_argument("-o", "--output", required=True, help="where to write the pruned model")
    p.add_argument("--inputs", help="safetensors file of example inputs (overrides the spec's inputs)")
    p.add_argument("--ratio", type=float, help="fraction of channels to remove per group (overrides the spec)")
    p.add_argument("--arch", help="registered architecture name, for state-dict files (see 'prunekit architectures')")
    p.add_argument("--format", choices=["same", "torchscript", "export", "state_dict", "checkpoint"],
                   help="output format (checkpoint: a folder of model.safetensors, manifest.json and config.json)")
    from .prune.importance import criterion_names

    p.add_argument("--importance", choices=criterion_names(), help="criterion (taylor, gradprobe, wanda need --calibration)")
    p.add_argument("--method", choices=["structured", "unstructured"], help="remove channels, or zero single weights")
    p.add_argument("--sparsity", type=float, help="unstructured: fraction of each layer's weights to zero")
    p.add_argument("--calibration", help="safetensors file of calibration data: 'inputs' and optional 'targets'")
    p.add_argument("--input-shape", action="append", metavar="N,C,H,W",
                   help="example input shape, batch first (repeat for several inputs)")
    p.add_argument("--report", help="where to write the JSON report (default: OUT's stem + .report.json)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_cmd_prune)

    a = sub.add_parser("architectures", help="list the architectures state-dicts can name (zoo:, torchvision:, timm:, hf:)",
                       description="Without an argument: the registered architectures, then one line per provider "
                       "(torchvision, timm, hf) saying whether its package is installed here. With a provider: every "
                       "name it offers.")
    a.add_argument("provider", nargs="?", help="list every name of one provider: torchvision, timm or hf")
    a.set_defaults(func=_cmd_architectures)

    _add_app_commands(sub)
    from . import cli_service

    cli_service.register(sub)
    return parser


# PruneKit is installed from its checkout (it is not on PyPI): the extra is installed from there.
SERVICE_EXTRA_HINT = "pip install -e '.[service]' in the PruneKit checkout"


def needs_service_extra(command: str) -> int:
    """Say in one line that ``prunekit COMMAND`` needs the service extra; the exit code to return."""
    print(f"prunekit {command} needs the service extra: {SERVICE_EXTRA_HINT}", file=sys.stderr)
    return EXIT_ERROR


def _command_entry_points() -> list[EntryPoint]:
    """The ``prunekit.commands`` entry points, one per name, sorted by name."""
    unique: dict[str, EntryPoint] = {}
    for ep in entry_points(group=COMMANDS_GROUP):
        unique.setdefault(ep.name, ep)
    return [unique[name] for name in sorted(unique)]


def _add_app_commands(sub: Any) -> None:
    """Let each ``prunekit.commands`` entry point add its subcommand; a service command whose
    entry point is absent or cannot be imported gets a stand-in that says what to install."""
    for ep in _command_entry_points():
        if ep.name in sub.choices:
            continue
        try:
            register = ep.load()
        except ImportError as exc:
            if ep.name not in SERVICE_COMMANDS:
                print(f"prunekit: the {ep.name!r} command ({ep.value}) cannot be loaded: {exc}", file=sys.stderr)
            continue
        register(sub)
    for name, help_text in SERVICE_COMMANDS.items():
        if name not in sub.choices:
            p = sub.add_parser(name, help=f"{help_text} (needs the service extra)",
                               description=f"{help_text[0].upper()}{help_text[1:]}. Needs the service extra: "
                               f"{SERVICE_EXTRA_HINT}.")
            p.set_defaults(func=lambda args, name=name: needs_service_extra(name), accepts_any_arguments=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_any_arguments", False):
        parser.error("unrecognized arguments: " + " ".join(unknown))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
