"""Public entry points: :func:`prune` (in memory) and :func:`prune_to_dir` (files in, files out).

The stages, in order, each reported through the progress callback:

``load`` → ``capture`` → ``analyse`` → ``rank`` → ``remove`` → ``check`` → ``export``

Nothing is returned or written unless the check passed: the pruned model computes what the
original computes with the removed channels zeroed.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn

from .artifacts import ARTIFACT_NAMES, REPORT_NAME
from .verify import check as check_mod
from .io import export as export_mod
from .errors import ExportFailed, InvalidSpec, PruneKitError, first_line
from .io.inputs import InputSignature, from_safetensors, from_specs, sample_inputs
from .io.loading import LoadedModel, load_model
from .metrics import count_macs, count_parameters
from .verify.masked import masked_original
from .prune.plan import plan as make_plan
from .io.rebuild import frozen_tensors
from .registry import get_architecture
from .report import LayerChange, PruneReport
from .analysis.walk import analyse
from .analysis.ruleset import RulesArg, RuleSet, extra_rules
from .spec import Spec, parse_spec
from .prune.removal import Removal
from .prune.surgery import apply
from .capture import capture, humanize_symbols, symbol_names

ProgressCallback = Callable[[str, float, str], None]
"""``(stage, fraction, message)``: ``fraction`` is the overall progress, from 0 to 1."""

STAGES = ("load", "capture", "analyse", "rank", "remove", "check", "export")
_SPAN = {"load": (0.0, 0.05), "capture": (0.05, 0.3), "analyse": (0.3, 0.45), "rank": (0.45, 0.5),
         "remove": (0.5, 0.55), "check": (0.55, 0.75), "export": (0.75, 1.0)}


@dataclass
class PruneResult:
    model: nn.Module                              # the pruned model, runnable
    report: PruneReport
    artifacts: dict[str, Path] = field(default_factory=dict)  # file name -> path (prune_to_dir)


class _Progress:
    def __init__(self, cb: ProgressCallback | None) -> None:
        self.cb, self.t0, self.stage = cb, time.perf_counter(), None
        self.timings: dict[str, float] = {}

    def start(self, stage: str, message: str) -> None:
        self.finish()
        self.stage, self.t0 = stage, time.perf_counter()
        if self.cb:
            self.cb(stage, _SPAN[stage][0], message)

    def tick(self, within: float, message: str) -> None:
        """Progress inside a long stage (also where a caller may cancel by raising)."""
        if self.cb and self.stage is not None:
            lo, hi = _SPAN[self.stage]
            self.cb(self.stage, lo + (hi - lo) * min(max(within, 0.0), 0.99), message)

    def finish(self) -> None:
        if self.stage is not None:
            self.timings[self.stage] = round(time.perf_counter() - self.t0, 4)
            if self.cb:
                self.cb(self.stage, _SPAN[self.stage][1], f"{self.stage} done")
            self.stage = None


def _signatures(spec: Spec, loaded: LoadedModel, inputs: Path | None) -> list[InputSignature]:
    if inputs is not None:
        return from_safetensors(Path(inputs))
    if spec.inputs:
        return from_specs(spec.inputs)
    if loaded.architecture:
        defaults = get_architecture(loaded.architecture).example_inputs
        if defaults:
            return from_specs(defaults)
    raise InvalidSpec("inputs: the spec gives no example inputs (add inputs: [{\"shape\": [...], \"dtype\": ...}])")


def _load_any(model: Any, spec: Spec) -> LoadedModel:
    if isinstance(model, nn.Module) and not isinstance(model, torch.jit.ScriptModule):
        names = {n for n, _ in model.named_parameters()}
        return LoadedModel("state_dict", 0, module=model.eval(), architecture=spec.architecture, param_names=names)
    if isinstance(model, torch.jit.ScriptModule):
        return LoadedModel("torchscript", 0, module=model.eval(), param_names={n for n, _ in model.named_parameters()})
    if isinstance(model, (bytes, bytearray)):
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
            f.write(model)
        try:
            loaded = load_model(f.name, architecture=spec.architecture)
        finally:
            Path(f.name).unlink(missing_ok=True)
        return loaded
    return load_model(Path(model), architecture=spec.architecture)


def _tensors(gm: fx.GraphModule) -> dict[str, torch.Tensor]:
    out = dict(gm.named_parameters())
    out.update(dict(gm.named_buffers()))
    return out


def _run(model: Any, spec: Spec, inputs: Path | None, progress: ProgressCallback | None,
         out_dir: Path | None, rules: RulesArg = None) -> PruneResult:
    extra = extra_rules(rules)  # a malformed rules= fails here, before any work
    with warnings.catch_warnings():
        # torch's export/deepcopy machinery warns about its own internals; our report says what matters
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
        return _run_stages(model, spec, inputs, progress, out_dir, rules=extra)


@dataclass
class _Load:
    loaded: LoadedModel
    sigs: list[InputSignature]
    out_fmt: str


@dataclass
class _Removed:
    tensors: dict[str, torch.Tensor]   # the captured graph's, before
    removal: Removal
    pruned: fx.GraphModule


@dataclass
class _Checked:
    result: check_mod.CheckResult
    batches: list[int]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int


@dataclass
class _Exported:
    artifacts: dict[str, Path]
    model: nn.Module
    params_after: int
    file_size: int


def _run_stages(model: Any, spec: Spec, inputs: Path | None, progress: ProgressCallback | None,
                out_dir: Path | None, *, rules: RuleSet | None = None) -> PruneResult:
    prog = _Progress(progress)
    prog.start("load", "reading the model")
    load = _load_stage(model, spec, inputs)
    prog.start("capture", f"capturing the {load.loaded.format} model as a graph")
    cap = capture(load.loaded, load.sigs, seed=spec.seed)
    names = symbol_names(cap.gm)
    try:
        prog.start("analyse", "finding coupled channels")
        analysis = _analyse_stage(load, cap, spec, eager=load.out_fmt == "state_dict" and out_dir is not None, rules=rules)
        prog.start("rank", f"ranking channels by {spec.importance}")
        plan = make_plan(analysis, _tensors(cap.gm), spec)
        prog.start("remove", f"removing {len(plan.removed)} channels")
        removed = _remove_stage(cap.gm, analysis, plan)
        prog.start("check", "comparing with the masked original")
        checked = _check_stage(cap, analysis, removed, load.sigs, spec, prog)
        exported = None
        if out_dir is not None:
            prog.start("export", f"writing {load.out_fmt}")
            exported = _export_stage(load, cap, removed.pruned, checked.batches, spec, Path(out_dir), prog)
        prog.finish()
    except PruneKitError as exc:  # speak of the user's dims ("batch"), not torch's symbols ("s22")
        exc.args = (humanize_symbols(str(exc), names),)
        raise
    report = _report(load, cap, names, analysis, plan, removed, checked, exported, prog.timings)
    artifacts: dict[str, Path] = {}
    if exported is not None:
        artifacts = dict(exported.artifacts)
        report_path = Path(out_dir) / REPORT_NAME
        with export_mod.atomic_path(report_path) as tmp:
            tmp.write_text(report.to_json())
        artifacts[REPORT_NAME] = report_path
    return PruneResult(model=exported.model if exported else removed.pruned, report=report, artifacts=artifacts)


def _load_stage(model: Any, spec: Spec, inputs: Path | None) -> _Load:
    loaded = _load_any(model, spec)
    out_fmt = loaded.format if spec.output_format == "same" else spec.output_format
    return _Load(loaded, _signatures(spec, loaded, inputs), out_fmt)


def _analyse_stage(load: _Load, cap, spec: Spec, *, eager: bool, rules: RuleSet | None):
    """``eager``: the architecture's own forward will run the result (state-dict output)."""
    module = load.loaded.module
    frozen = frozen_tensors(module) if eager and isinstance(module, nn.Module) and not isinstance(module, torch.jit.ScriptModule) else {}
    example2 = sample_inputs(load.sigs, cap.example[0].shape[0] + 1, spec.seed + 7) if cap.dynamic_batch else None
    return analyse(cap.gm, cap.example, example2, frozen=frozen, eager=eager, rules=rules)


def _remove_stage(gm: fx.GraphModule, analysis, plan) -> _Removed:
    removal = Removal.of(plan.removed, analysis.atoms.roots())
    return _Removed(_tensors(gm), removal, apply(gm, analysis, removal))


def _check_stage(cap, analysis, removed: _Removed, sigs, spec: Spec, prog: "_Progress") -> _Checked:
    gm, pruned = cap.gm, removed.pruned
    batches = [1, 3] if cap.dynamic_batch else [int(cap.example[0].shape[0])] * 2
    upload_batches = batches if cap.upload_batch is None else [cap.upload_batch]
    prog.tick(0.05, "running the model as uploaded and its captured graph")
    upload_rel = check_mod.compare_with_upload(cap.upload, gm, sigs, upload_batches, spec.seed, spec.tolerance)
    masked = masked_original(gm, analysis, removed.removal)
    prog.tick(0.2, "running the pruned model and the masked original")
    result = check_mod.verify(pruned, masked, analysis.output_labels, removed.removal, sigs, batches, spec.seed, spec.tolerance)
    result.upload_max_rel, result.upload_batch_sizes = upload_rel, sorted(set(upload_batches))
    prog.tick(0.7, f"check passed (max relative deviation {result.max_rel:.2e}); counting MACs")
    one = sample_inputs(sigs, 1 if cap.dynamic_batch else int(cap.example[0].shape[0]), spec.seed)
    return _Checked(result, batches, count_macs(gm, one), count_macs(pruned, one),
                    count_parameters(gm), count_parameters(pruned))


def _export_stage(load: _Load, cap, pruned: fx.GraphModule, batches: list[int], spec: Spec, out_dir: Path,
                  prog: "_Progress") -> _Exported:
    artifacts, load_back = export_mod.write(
        pruned, load.out_fmt, out_dir, cap.example, cap.dynamic_batch,
        architecture=load.loaded.architecture or spec.architecture,
        state_names=list(_original_state_names(load.loaded, cap.gm)),
    )
    prog.tick(0.6, "loading the written model back to prove it")
    model = _prove_artifact(load_back, pruned, load.sigs, batches, spec, artifacts)
    return _Exported(artifacts, model, count_parameters(model), artifacts[ARTIFACT_NAMES[load.out_fmt]].stat().st_size)


def _report(load: _Load, cap, names: dict[str, str], analysis, plan, removed: _Removed, checked: _Checked,
            exported: _Exported | None, timings: dict[str, float]) -> PruneReport:
    """The report, built from the stages' results (and nothing else)."""
    loaded = load.loaded
    after = _tensors(removed.pruned)
    warnings = [humanize_symbols(w, names) for w in cap.warnings]
    warnings += [f"channels stop at {op}: no channel rule (they are kept)" for op in sorted({b.op for b in analysis.barriers})]
    warnings += plan.warnings
    return PruneReport(
        input_format=loaded.format, output_format=load.out_fmt, architecture=loaded.architecture,
        params_before=checked.params_before,
        params_after=exported.params_after if exported else checked.params_after,
        macs_before=checked.macs_before, macs_after=checked.macs_after,
        file_size_before=loaded.size_bytes, file_size_after=exported.file_size if exported else 0,
        dynamic_batch=cap.dynamic_batch,
        channels_before=sum(len(g.roots) for g in plan.groups), channels_removed=len(plan.removed),
        groups_found=len(plan.groups),
        groups_pruned=sum(1 for g in plan.groups if g.remove is not None and len(g.remove)),
        layers=[LayerChange(n, list(t.shape), list(after[n].shape)) for n, t in removed.tensors.items()
                if n in after and tuple(after[n].shape) != tuple(t.shape)],
        groups=[g.to_dict() for g in plan.groups],
        barriers=[{"node": b.node, "op": b.op, "reason": b.reason} for b in analysis.barriers],
        kept=[{"param": n, "reason": why} for n, why in plan.pinned_reasons.items()],
        check=checked.result.to_dict(), timings=dict(timings), warnings=warnings,
    )


def _original_state_names(loaded: LoadedModel, gm: fx.GraphModule) -> list[str]:
    if loaded.module is not None and not isinstance(loaded.module, torch.jit.ScriptModule):
        return list(loaded.module.state_dict().keys())
    return list(gm.state_dict().keys())


def _prove_artifact(load_back, pruned: nn.Module, sigs, batches, spec: Spec, artifacts: dict[str, Path]) -> nn.Module:
    """Load the written file and make sure it computes what the checked pruned graph computes."""
    try:
        model = load_back()
    except ExportFailed:
        _remove(artifacts)
        raise
    except Exception as exc:
        _remove(artifacts)
        raise ExportFailed(f"the written model does not load back: {first_line(exc)}") from None
    for i, b in enumerate(sorted(set(batches) | ({7} if batches[0] != batches[-1] else set()))):
        x = sample_inputs(sigs, b, spec.seed + 99 + i)
        with torch.no_grad():
            try:
                got = model(*x)
            except Exception as exc:
                _remove(artifacts)
                raise ExportFailed(
                    f"the written model does not run at batch {b}: {first_line(exc)}"
                    + ("; the architecture's forward may hard-code widths, ask for output_format 'torchscript' or 'export'"
                       if spec.output_format == "state_dict" or ARTIFACT_NAMES["state_dict"] in artifacts else "")
                ) from None
            ref = pruned(*x)
        dev = check_mod.compare_outputs(ref, got, dtypes=False)
        if dev.problem or dev.max_rel > 1e-4:
            _remove(artifacts)
            why = dev.problem or f"deviates by {dev.max_rel:.3g} (relative)"
            raise ExportFailed(f"the written model computes something else than the checked pruned model at batch {b}: {why}")
    return model


def _remove(artifacts: dict[str, Path]) -> None:
    for p in artifacts.values():
        Path(p).unlink(missing_ok=True)


def prune(model: Any, spec: "Spec | dict | str | Path", *, inputs: "str | Path | None" = None,
          progress: ProgressCallback | None = None, rules: RulesArg = None) -> PruneResult:
    """Prune ``model`` (a file path, bytes, an ``nn.Module`` or a ``ScriptModule``) following ``spec``.

    Returns the pruned, checked model (a ``torch.fx.GraphModule``) and its report; writes nothing.
    Raises :class:`prunekit.PruneKitError` subclasses for anything the caller can fix.
    ``rules`` teaches the analysis ops it has no rule for (a :class:`prunekit.RuleSet` or a dict
    ``{op: prunekit.Rule}``, or a list of them); they win over the built-in rules for their ops.
    """
    return _run(model, parse_spec(spec), Path(inputs) if inputs else None, progress, None, rules)


def prune_to_dir(model_path: "str | Path", spec: "Spec | dict | str | Path", out_dir: "str | Path", *,
                 inputs_path: "str | Path | None" = None, progress: ProgressCallback | None = None,
                 rules: RulesArg = None) -> PruneResult:
    """Prune the file at ``model_path`` and write the model, ``report.json`` (and for state-dict
    outputs ``manifest.json``) into ``out_dir``, each file atomically.  ``result.model`` is the
    written model loaded back."""
    return _run(Path(model_path), parse_spec(spec), Path(inputs_path) if inputs_path else None, progress, Path(out_dir),
                rules)
