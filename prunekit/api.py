"""Public entry points: :func:`prune` (in memory) and :func:`prune_to_dir` (files in, files out).

The stages, in order, each reported through the progress callback:

``load`` → ``capture`` → ``analyse`` → ``rank`` → ``remove`` → ``check`` → ``export``

With calibration data two more may run: ``calibrate`` (BatchNorm statistics re-estimated, after
``rank``) and ``evaluate`` (the original and the pruned model on the held-out samples, after
``check``); a sweep runs ``rank`` … ``evaluate`` once per setting inside one ``sweep`` stage.

Nothing is returned or written unless the check passed: the pruned model computes what the
original computes with the removed channels zeroed.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from . import sweep as sweep_mod
from .analysis.eager_limits import frozen_tensors
from .analysis.heads import attention_heads
from .analysis.ruleset import RulesArg, RuleSet, extra_rules
from .analysis.walk import analyse
from .artifacts import ARTIFACT_NAMES, MANIFEST_NAME, REPORT_NAME
from .capture import capture, humanize_symbols, symbol_names
from .data import batch_norm as bn_mod
from .data.calibration import Calibration, check_targets, load_calibration, signatures_from
from .data.objective import evaluate, evaluation_report, first_tensor
from .errors import (CheckFailed, ExportFailed, InputSizesLost, InvalidCalibration, InvalidSpec, OutputLarger,
                     PruneKitError, first_line)
from .io import export as export_mod
from .io.formats import EAGER_FORMATS
from .io.inputs import InputSignature, from_safetensors, from_specs, sample_inputs
from .io.loading import LoadedModel, load_model
from .memory import release_freed, trim
from .metrics import count_macs, count_parameters
from .prune import from_zeros
from .prune import inputs as inputs_mod
from .prune import reorder as reorder_mod
from .prune import unstructured
from .prune.importance import RankInputs
from .prune.plan import known_names
from .prune.plan import plan as make_plan
from .prune.removal import Removal
from .prune.surgery import apply
from .prune.target import TargetSearch
from .registry import get_architecture
from .report import LayerChange, PruneReport
from .spec import Spec, parse_spec
from .verify import check as check_mod
from .verify.masked import masked_original, renormalised

ProgressCallback = Callable[[str, float, str], None]
"""``(stage, fraction, message)``: ``fraction`` is the overall progress, from 0 to 1."""

STAGES = ("load", "capture", "analyse", "rank", "remove", "check", "export")
DATA_STAGES = ("calibrate", "evaluate", "sweep")  # run only with calibration data
_SPAN = {"load": (0.0, 0.05), "capture": (0.05, 0.3), "analyse": (0.3, 0.4), "rank": (0.4, 0.5),
         "calibrate": (0.5, 0.53), "remove": (0.53, 0.56), "check": (0.56, 0.7), "evaluate": (0.7, 0.75),
         "sweep": (0.4, 0.75), "export": (0.75, 1.0)}


@dataclass
class PruneResult:
    model: nn.Module                              # the pruned model, runnable
    report: PruneReport
    artifacts: dict[str, Path] = field(default_factory=dict)  # file name -> path (prune_to_dir)


class _Progress:
    """Stage starts, ticks within a stage, and the seconds each stage took.

    Inside a sweep (:meth:`setting`) the stages of one setting are not stages of the job: their
    starts and ticks become ticks of the ``sweep`` stage, within that setting's share of it.
    """

    def __init__(self, cb: ProgressCallback | None) -> None:
        self.cb, self.t0, self.stage = cb, time.perf_counter(), None
        self.timings: dict[str, float] = {}
        self.window: tuple[float, float, str] | None = None  # (lo, hi, label) of the current sweep setting
        self.inner: str | None = None                        # the setting's own stage

    def start(self, stage: str, message: str) -> None:
        trim()  # what the stage before freed goes back to the OS, so this stage's peak does not sit on it
        if self.window is not None:
            self.inner = stage
            self._emit(0.0, message)
            return
        self.finish()
        self.stage, self.t0 = stage, time.perf_counter()
        if self.cb:
            self.cb(stage, _SPAN[stage][0], message)

    def tick(self, within: float, message: str) -> None:
        """Progress inside a long stage (also where a caller may cancel by raising)."""
        if self.window is not None:
            self._emit(within, message)
        elif self.cb and self.stage is not None:
            lo, hi = _SPAN[self.stage]
            self.cb(self.stage, lo + (hi - lo) * min(max(within, 0.0), 0.99), message)

    _INNER = ("rank", "calibrate", "remove", "check", "evaluate")

    def _emit(self, within: float, message: str) -> None:
        lo, hi, label = self.window
        k = self._INNER.index(self.inner) if self.inner in self._INNER else 0
        within = (k + min(max(within, 0.0), 1.0)) / len(self._INNER)
        if self.cb and self.stage is not None:
            slo, shi = _SPAN[self.stage]
            f = lo + (hi - lo) * min(max(within, 0.0), 0.99)
            self.cb(self.stage, slo + (shi - slo) * f, f"{label}: {message}")

    @contextlib.contextmanager
    def setting(self, k: int, n: int, label: str):
        self.window = (k / n, (k + 1) / n, label)
        try:
            yield
        finally:
            self.window = None

    def sub(self, lo: float, hi: float):
        """A ``(within, message)`` callback for a sub-task that takes ``[lo, hi]`` of the stage."""
        return lambda within, message: self.tick(lo + (hi - lo) * within, message)

    def finish(self) -> None:
        if self.window is not None:
            return
        if self.stage is not None:
            self.timings[self.stage] = round(time.perf_counter() - self.t0, 4)
            if self.cb:
                self.cb(self.stage, _SPAN[self.stage][1], f"{self.stage} done")
            self.stage = None


def _signatures(spec: Spec, loaded: LoadedModel, inputs: Path | None, cal_source=None) -> list[InputSignature] | None:
    """The example inputs: a file, the spec, the architecture's defaults; ``None`` when only
    calibration data can tell (then its samples' shapes are used)."""
    if inputs is not None:
        return from_safetensors(Path(inputs))
    if spec.inputs:
        return from_specs(spec.inputs)
    if loaded.architecture:
        defaults = get_architecture(loaded.architecture, loaded.config).example_inputs
        if defaults:
            return from_specs(defaults)
    if cal_source is not None:
        return None
    raise InvalidSpec("inputs: the spec gives no example inputs (add inputs: [{\"shape\": [...], \"dtype\": ...}])")


def _argument_names(loaded: LoadedModel) -> list[str] | None:
    """The model's input names (for calibration files keyed by them), where the file says."""
    import inspect

    try:
        if isinstance(loaded.module, torch.jit.ScriptModule):
            return [a.name for a in loaded.module.forward.schema.arguments[1:]]
        if loaded.module is not None:
            return [n for n, p in inspect.signature(loaded.module.forward).parameters.items()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if loaded.program is not None:
            return [s.arg.name for s in loaded.program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    except Exception:  # names are a convenience: positional keys always work
        return None
    return None


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
         out_dir: Path | None, rules: RulesArg = None, calibration: Any = None) -> PruneResult:
    extra = extra_rules(rules)  # a malformed rules= fails here, before any work
    if spec.needs_data and calibration is None:
        raise InvalidCalibration(f"{', '.join(spec.needs_data)} need calibration data: give a .safetensors file "
                                 "with 'inputs' (and optional 'targets')", field="calibration")
    with warnings.catch_warnings():
        # torch's export/deepcopy machinery warns about its own internals; our report says what matters
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
        return _run_stages(model, spec, inputs, progress, out_dir, rules=extra, calibration=calibration)


@dataclass
class _Load:
    loaded: LoadedModel
    sigs: list[InputSignature]
    out_fmt: str
    cal: Calibration | None = None
    original_eval: dict | None = None  # the original on the held-out samples (evaluated once)
    capture_macs: dict = field(default_factory=dict)  # the capture's MACs, counted by the upload comparison
    upload_params: int = 0             # the upload's unique parameters (the upload itself is let go after capture)


@dataclass
class _Removed:
    tensors: dict[str, torch.Tensor]   # the captured graph's, before
    removal: Removal | None            # None: unstructured (no channel leaves)
    pruned: fx.GraphModule
    reference: fx.GraphModule | None   # what the check compares it with (the masked original, built by the check)


@dataclass
class _Checked:
    result: check_mod.CheckResult
    batches: list[int]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    normalized: dict | None = None   # normalized_dims prune: the ops that changed and how much the output did
    samples: list = field(default_factory=list)  # (batch, inputs, the pruned model's outputs) the check saw


@dataclass
class _Exported:
    artifacts: dict[str, Path]
    model: nn.Module
    params_after: int
    file_size: int


@dataclass
class _Setting:
    """One prune of the captured model: what was chosen, cut, checked and (with data) evaluated."""

    spec: Spec
    plan: Any                           # prune.plan.Plan (structured) or {weight: mask} (unstructured)
    removed: _Removed
    checked: _Checked
    evaluation: dict | None = None
    extra: dict = field(default_factory=dict)  # report sections: sparsity, target, importance, calibration


def _run_stages(model: Any, spec: Spec, inputs: Path | None, progress: ProgressCallback | None,
                out_dir: Path | None, *, rules: RuleSet | None = None, calibration: Any = None) -> PruneResult:
    prog = _Progress(progress)
    prog.start("load", "reading the model" + (" and the calibration data" if calibration is not None else ""))
    load = _load_stage(model, spec, inputs, calibration)
    prog.start("capture", f"capturing the {load.loaded.format} model as a graph")
    # node stack traces (the model's source lines) live on only in an export archive or the graph handed back
    cap = capture(load.loaded, load.sigs, seed=spec.seed, stack_traces=out_dir is None or load.out_fmt == "export")
    load.sigs = cap.sigs or load.sigs  # with the dynamic dims besides the batch the upload takes
    release_freed()  # capture's scaffolding is gone: do not carry its peak into the later stages
    names = symbol_names(cap.gm)
    try:
        if load.cal is not None:
            with torch.no_grad():
                check_targets(load.cal, first_tensor(cap.gm(*load.cal.example())))
        # the upload is compared with its capture once: every setting is cut from that capture
        upload_batches, upload_rel = _compare_upload(cap, load.sigs, spec, load.capture_macs)
        _let_go_of_upload(load, cap)
        analysis, inputs_report = None, None
        if spec.method == "structured":
            prog.start("analyse", "finding coupled channels")
            eager = load.out_fmt in EAGER_FORMATS and out_dir is not None
            if (spec.input_channels and not spec.constrained) or spec.from_zeros:
                cap, inputs_report, spec, analysis = _inputs_stage(load, cap, spec, out_dir, prog, rules)
            if analysis is None or eager:  # (the inputs stage's analysis serves when the graph is unchanged)
                analysis = _analyse_stage(load, cap, spec, eager=eager, rules=rules)
        inp = RankInputs(analysis=analysis, tensors=_tensors(cap.gm), spec=spec, gm=cap.gm, calibration=load.cal)
        sweep = None
        if spec.sweep is not None:
            sweep, chosen = _sweep_stage(load, cap, analysis, inp, spec, prog)
        else:
            chosen = _prune_setting(load, cap, analysis, inp, spec, prog)
        chosen.checked.result.upload_max_rel, chosen.checked.result.upload_batch_sizes = upload_rel, upload_batches
        if inputs_report is not None:  # (constrained mode reports from the setting itself)
            chosen.extra["inputs"] = inputs_report
        exported = None
        if out_dir is not None:
            prog.start("export", f"writing {load.out_fmt}")
            exported = _export_stage(load, cap, chosen.removed.pruned, chosen.checked, spec, Path(out_dir), prog)
            if sweep is not None:
                exported.artifacts.update(sweep_mod.write(sweep, Path(out_dir)))
        prog.finish()
    except PruneKitError as exc:  # speak of the user's dims ("batch"), not torch's symbols ("s22")
        exc.args = (humanize_symbols(str(exc), names),)
        raise
    report = _report(load, cap, names, analysis, chosen, exported, prog.timings, sweep)
    artifacts: dict[str, Path] = {}
    if exported is not None:
        artifacts = dict(exported.artifacts)
        report_path = Path(out_dir) / REPORT_NAME
        with export_mod.atomic_path(report_path) as tmp:
            tmp.write_text(report.to_json())
        artifacts[REPORT_NAME] = report_path
    return PruneResult(model=exported.model if exported else chosen.removed.pruned, report=report, artifacts=artifacts)


def _load_stage(model: Any, spec: Spec, inputs: Path | None, cal_source: Any = None) -> _Load:
    loaded = _load_any(model, spec)
    out_fmt = loaded.format if spec.output_format == "same" else spec.output_format
    sigs = _signatures(spec, loaded, inputs, cal_source)
    cal = None
    if cal_source is not None:
        cal = load_calibration(cal_source, sigs=sigs, arg_names=_argument_names(loaded), batch_size=spec.batch_size,
                               num_batches=spec.num_batches, holdout=spec.holdout, loss=spec.loss, seed=spec.seed)
        if sigs is None:
            sigs = signatures_from(cal)
    return _Load(loaded, sigs, out_fmt, cal)


def _inputs_stage(load: _Load, cap, spec: Spec, out_dir: Path | None, prog: "_Progress", rules):
    """Consumers named with ``dim: in`` read only what they keep (prune/inputs.py), after the
    streams they read were reordered to make the most subselections narrows (prune/reorder.py);
    the result is proven equal to the capture with those weight columns zeroed before anything
    else is cut.

    With ``from_zeros``, weight columns that are already all zero join in, but only to free
    producer channels that no reader wants any more: they are never subselected (a subselection
    costs more than the multiply-adds a zero column wastes, bench/README.md)."""
    asked = [] if spec.constrained else list(spec.input_channels)
    zero_cols = inputs_mod.zero_columns(cap.gm) if spec.from_zeros else []
    if not asked and not zero_cols:
        return cap, None, spec, None
    if asked and load.out_fmt in EAGER_FORMATS and out_dir is not None:
        raise InvalidSpec("channels: dim 'in' needs a graph output (output_format torchscript or export): a "
                          "state-dict output runs the architecture's own forward, which cannot read a subset of its "
                          "input (or set constrained: true to remove those channels from their producer)")
    n = len({c.param for c in asked})
    known_names(_tensors(cap.gm), [c.param for c in asked], "channels")
    reference = inputs_mod.zeroed(cap.gm, asked)
    batches = _check_batches(cap)

    def attempt(gm: fx.GraphModule, entries) -> tuple[Any, float]:
        sub = inputs_mod.subselect(gm, entries)
        rel = check_mod.compare_with_upload(reference, sub.gm, load.sigs, batches, spec.seed, spec.tolerance,
                                            what="the graph with subselected inputs",
                                            reference="the uploaded model with those input channels zeroed")
        return sub, rel

    prog.tick(0.0, "finding the streams those consumers read")
    base = _analyse_stage(load, cap, spec, eager=False, rules=rules)
    outright, entries = _unread_channels(load, cap, spec, base, asked, zero_cols, reference, batches)
    if not asked and not outright:  # from_zeros found zero columns, but none frees a channel
        return cap, None, spec, base
    streams: list[dict] = []
    sub, rel, carried = None, 0.0, outright
    if entries and spec.reorder_inputs:
        prog.tick(0.3, "ordering the channels of the streams those consumers read")
        gm, moved_entries, streams, moved_outright = reorder_mod.reorder(cap.gm, base, entries, outright)
        if streams:
            try:
                prog.tick(0.6, f"subselecting the inputs of {n} consumers")
                sub, rel = attempt(gm, moved_entries)
                carried = moved_outright
            except CheckFailed as exc:  # the labels allowed a permutation the model does not: go without
                streams, sub = [{"abandoned": first_line(exc)}], None
    if entries and sub is None:
        prog.tick(0.6, f"subselecting the inputs of {n} consumers")
        sub, rel = attempt(cap.gm, entries)
    info = (sub.report() if sub is not None else {"consumers": [], "narrows": 0, "gathers": 0}) | {
        "check_max_rel": rel, "reordered": streams,
        "removed_outright": [{"param": e.param, "channels": e.channels} for e in outright]}
    if zero_cols:
        info["zero_columns"] = sum(len(e.channels) for e in zero_cols)
    spec_after = spec.model_copy(update={"channels": spec.output_channels + carried + list(spec.input_channels)})
    if sub is None:
        return cap, info, spec_after, base
    return replace(cap, gm=sub.gm, before=cap.gm), info, spec_after, None


def _unread_channels(load: _Load, cap, spec: Spec, base, asked: list, zero_cols: list, reference, batches):
    """Producer channels no reader wants any more go outright (with everything coupled) instead of
    being subselected, if the upload with them masked everywhere is the upload with the asked
    columns zeroed (nothing else reads them).  Returns those removals and the asked entries left."""
    outright, entries, gone = inputs_mod.unread(base, _tensors(cap.gm), asked + zero_cols)
    wanted = {(e.param, c) for e in asked for c in e.channels}  # zero columns are never subselected
    entries = [e.model_copy(update={"channels": cs}) for e in entries
               if (cs := [c for c in e.channels if (e.param, c) in wanted])]
    if outright:
        masked = masked_original(inputs_mod.zeroed(cap.gm, entries), base, Removal.of(gone, base.atoms.roots()))
        try:
            check_mod.compare_with_upload(reference, masked, load.sigs, batches, spec.seed, spec.tolerance)
        except CheckFailed:  # another op reads those channels: keep them, subselect instead
            return [], asked
    return outright, entries


def _analyse_stage(load: _Load, cap, spec: Spec, *, eager: bool, rules: RuleSet | None):
    """``eager``: the architecture's own forward will run the result (state-dict output)."""
    module = load.loaded.module
    frozen = frozen_tensors(module) if eager and isinstance(module, nn.Module) and not isinstance(module, torch.jit.ScriptModule) else {}
    varies = any(s.vary for s in load.sigs)
    example2 = (sample_inputs(load.sigs, cap.example[0].shape[0] + (1 if cap.dynamic_batch else 0), spec.seed + 7, second=True)
                if cap.dynamic_batch or varies else None)
    return analyse(cap.gm, cap.example, example2, frozen=frozen, eager=eager, rules=rules,
                   normalized_dims=spec.normalized_dims)


def _check_batches(cap) -> list[int]:
    return [1, 3] if cap.dynamic_batch else [int(cap.example[0].shape[0])] * 2


def _compare_upload(cap, sigs, spec: Spec, macs: dict | None = None) -> tuple[list[int], float]:
    """``macs`` receives the capture's MACs at the first batch (``"captured"``: ``(macs, input
    shapes)``) and the graph they count (``"graph"``): the report's MACs before, without a pass
    of their own."""
    batches = _check_batches(cap)
    upload_batches = batches if cap.upload_batch is None else [cap.upload_batch]
    rel = check_mod.compare_with_upload(cap.upload, cap.gm, sigs, upload_batches, spec.seed, spec.tolerance,
                                        macs=macs)
    if macs is not None:
        macs["graph"] = cap.gm  # what was counted (the inputs stage may put another graph in cap.gm)
    return sorted(set(upload_batches)), rel


def _let_go_of_upload(load: _Load, cap) -> None:
    """After the upload comparison only the upload's parameter count is still needed (no output
    is larger than its upload): a TorchScript upload's module and a ``.pt2``'s program are let go
    before the later stages' peaks.  Their weights live on in the capture, which shares them; what
    goes is the TorchScript code and graphs and the executor's plans (EfficientNet-B0: ~30 MB,
    1.5x its weights) or the program's graph.  An eager module stays: the analysis reads its
    frozen tensors and a state-dict output its names."""
    load.upload_params = count_parameters(cap.upload) if isinstance(cap.upload, nn.Module) else 0
    cap.upload = None
    if load.loaded.format == "torchscript":
        load.loaded.module = None
    elif load.loaded.program is not None:
        load.loaded.program = None


def _one_input(cap, sigs, spec: Spec) -> tuple:
    return sample_inputs(sigs, 1 if cap.dynamic_batch else int(cap.example[0].shape[0]), spec.seed)


def _prune_setting(load: _Load, cap, analysis, inp: RankInputs, spec: Spec, prog: "_Progress") -> _Setting:
    """rank → (calibrate) → remove → check → (evaluate), for one spec."""
    inp.spec = spec
    if spec.method == "unstructured":
        return _unstructured_setting(load, cap, inp, spec, prog)
    prog.start("rank", f"ranking channels by {spec.importance}")
    inp.progress = prog.sub(0.0, 1.0)
    extra: dict = {}
    search = TargetSearch(analysis, cap.gm, _tensors(cap.gm), spec, _one_input(cap, load.sigs, spec)) if spec.target else None
    also: set[int] = set()
    if spec.from_zeros:
        zeros, extra["from_zeros"] = _zeros_stage(cap, analysis, load, spec, prog)
        also |= zeros
    if spec.input_channels and spec.constrained:
        grown, extra["inputs"] = inputs_mod.constrained(analysis, _tensors(cap.gm), spec.input_channels)
        also |= grown
    plan = make_plan(analysis, _tensors(cap.gm), spec, inp=inp, target_search=search, also_remove=also)
    if search is not None:
        plan, extra["target"] = _meet_target(search, analysis, plan, spec, inp, cap, load, prog)
    source = cap.gm
    removal = Removal.of(plan.removed, analysis.atoms.roots())
    if spec.recalibrate_bn:
        prog.start("calibrate", "re-estimating BatchNorm statistics on the calibration inputs")
        source, extra["calibration"] = _recalibrate(cap.gm, analysis, removal, load.cal, prog)
    prog.start("remove", f"removing {len(plan.removed)} channels")
    removed = _remove_stage(source, analysis, removal)
    prog.start("check", "comparing with the masked original")
    removed.reference = masked_original(source, analysis, removal)  # the check's reference: built for it
    checked = _check_stage(cap, analysis, removed, load.sigs, spec, prog, load.capture_macs)
    if "gradprobe" in inp.details:
        extra["importance"] = {"gradprobe": dict(inp.details["gradprobe"])}
    setting = _Setting(spec, plan, removed, checked, extra=extra)
    _evaluate_stage(setting, cap, load, prog)
    return setting


def _zeros_stage(cap, analysis, load: _Load, spec: Spec, prog: "_Progress") -> tuple[set[int], dict]:
    """Channels whose producing weights are exactly zero, kept only where masking them leaves the
    capture's output unchanged (prune/from_zeros.py)."""
    params = {n for n, _ in cap.gm.named_parameters()}
    candidates, partial = from_zeros.zero_channels(analysis, _tensors(cap.gm), params, spec.min_channels)
    roots, batches = analysis.atoms.roots(), _check_batches(cap)
    prog.tick(0.1, f"from_zeros: {sum(len(r) for r in candidates.values())} channels have only zero weights")

    def unchanged(rs: set[int]) -> bool:
        masked = masked_original(cap.gm, analysis, Removal.of(rs, roots))
        try:
            check_mod.compare_with_upload(cap.gm, masked, load.sigs, batches, spec.seed, spec.tolerance)
        except CheckFailed:
            return False
        return True

    accepted, kept = from_zeros.exact(candidates, unchanged)
    n = sum(len(r) for r in candidates.values())
    info = {"candidates": n, "removed": len(accepted), "groups_kept": kept, "zero_rows_with_a_live_bias_or_norm": partial}
    if kept:
        info["why_kept"] = ("their channels still carry a value although their weights are zero (an op such as sigmoid "
                            "maps 0 elsewhere): removing them would change the output")
    alone = not (spec.ratio or spec.layers or spec.output_channels or spec.target)
    if not accepted and alone:
        if n:
            why = (f"{n} channels have only zero weights, but they still carry a value (an op such as sigmoid maps "
                   "0 elsewhere): removing them would change the output")
        elif partial:
            why = (f"{partial} channels have all-zero weight rows, but their bias or BatchNorm shift is not zero, so "
                   "they still emit a constant; mask the bias and the BatchNorm weight and bias too (what "
                   "torch.nn.utils.prune leaves to you) to make them removable")
        else:
            why = "no channel has all its producing weights exactly zero"
        raise InvalidSpec(f"nothing to prune: from_zeros: {why}")
    return accepted, info


def _recalibrate(gm: fx.GraphModule, analysis, removal: Removal, cal: Calibration, prog: "_Progress"):
    """New BN statistics measured on the masked original, written into a copy of ``gm``."""
    masked = masked_original(gm, analysis, removal)
    nodes = len(bn_mod.batch_norm_nodes(gm))
    stats = bn_mod.estimate(masked, cal, buffers_of=gm, on_batch=lambda k: prog.tick((k + 1) / cal.num_batches,
                                                                      f"batch {k + 1}/{cal.num_batches}"))
    source = copy.deepcopy(gm)
    bn_mod.write_statistics(source, stats)
    info = {"batch_norms": nodes, "samples": min(cal.num_batches * cal.batch_size, len(cal.train_index)),
            "note": "the check compares with the uploaded model carrying the same new statistics"}
    return source, info


def _meet_target(search: TargetSearch, analysis, plan, spec: Spec, inp: RankInputs, cap, load: _Load,
                 prog: "_Progress"):
    """Count the real MACs/params of the plan; where the modelled cost missed the target, correct
    the model by what it missed and re-plan (a few times at most)."""
    one = _one_input(cap, load.sigs, spec)
    before = count_macs(cap.gm, one) if search.metric == "macs" else count_parameters(cap.gm)

    def real(plan) -> int:
        m = apply(cap.gm, analysis, Removal.of(plan.removed, analysis.atoms.roots()))
        return count_macs(m, one) if search.metric == "macs" else count_parameters(m)

    reached = real(plan) / before if before > 0 else 1.0
    for _ in range(3):
        if reached <= spec.target.fraction or before <= 0:
            break
        modelled = search.modelled_fraction(plan.removed)
        search.corrected(reached, modelled)
        prog.tick(0.5, f"target {search.metric} {spec.target.fraction}: reached {reached:.3f}, removing more")
        plan = make_plan(analysis, _tensors(cap.gm), spec, inp=inp, target_search=search)
        reached = real(plan) / before
    info = {"metric": search.metric, "requested": spec.target.fraction, "reached": round(reached, 6),
            "met": reached <= spec.target.fraction + 1e-9}
    if not info["met"]:
        gp = inp.details.get("gradprobe")
        info["why"] = (f"gradprobe restored {gp['restored']} channels whose gradients grew, over {gp.get('rounds', 1)} "
                       "probe rounds; raise gradient_threshold to let more go" if gp and gp["restored"]
                       else "every removable channel is gone, or min_channels/round_to keep the rest")
    return plan, info


def _unstructured_setting(load: _Load, cap, inp: RankInputs, spec: Spec, prog: "_Progress") -> _Setting:
    prog.start("rank", f"scoring weights by {spec.importance}")
    inp.progress = prog.sub(0.0, 1.0)
    names = unstructured.eligible(cap.gm, spec)
    if not names:
        raise InvalidSpec("method unstructured: the model has no weight matrix to sparsify (or ignore lists them all)")
    masks = unstructured.choose(inp, names)
    prog.start("remove", "zeroing the chosen weights")
    pruned = unstructured.zeroed(cap.gm, masks)
    removed = _Removed(_tensors(cap.gm), None, pruned, unstructured.masked_in_graph(cap.gm, masks))
    prog.start("check", "comparing with the uploaded model, its weights masked in the graph")
    checked = _check_stage(cap, None, removed, load.sigs, spec, prog, load.capture_macs)
    extra = {"sparsity": unstructured.report(cap.gm, masks, spec)}
    if "gradprobe" in inp.details:
        extra["importance"] = {"gradprobe": dict(inp.details["gradprobe"])}
    setting = _Setting(spec, masks, removed, checked, extra=extra)
    _evaluate_stage(setting, cap, load, prog)
    return setting


def _evaluate_stage(setting: _Setting, cap, load: _Load, prog: "_Progress") -> None:
    cal = load.cal
    if cal is None or not len(cal.holdout_index):
        return
    prog.start("evaluate", f"evaluating on {len(cal.holdout_index)} held-out samples")
    if load.original_eval is None:
        load.original_eval = evaluate(cap.gm, cal, reference=cap.gm)
    pruned = evaluate(setting.removed.pruned, cal, reference=cap.gm)
    setting.evaluation = evaluation_report(load.original_eval, pruned, cal.loss)


def _sweep_stage(load: _Load, cap, analysis, inp: RankInputs, spec: Spec, prog: "_Progress"):
    sw = spec.sweep
    prog.start("sweep", f"{len(sw.values)} settings of {sw.parameter}")
    settings: list[_Setting] = []
    rows = []
    for k, value in enumerate(sw.values):
        label = f"setting {k + 1}/{len(sw.values)} ({sw.parameter} {value:g})"
        spec_k = spec.model_copy(update={sw.parameter: value, "sweep": None})
        with prog.setting(k, len(sw.values), label):
            try:
                s = _prune_setting(load, cap, analysis, inp, spec_k, prog)
            except InvalidSpec as exc:  # a setting that prunes nothing is a row, not a failed job
                rows.append(sweep_mod.failed_row(sw.parameter, value, str(exc)))
                settings.append(None)
                continue
        settings.append(s)
        rows.append(sweep_mod.row(sw.parameter, value, s))
    result = sweep_mod.select(spec, rows, load.original_eval)
    prog.tick(0.99, f"selected {sw.parameter} {result.selected:g}")
    return result, settings[result.index]


def _remove_stage(gm: fx.GraphModule, analysis, removal: Removal) -> _Removed:
    return _Removed(_tensors(gm), removal, apply(gm, analysis, removal), None)


def _check_stage(cap, analysis, removed: _Removed, sigs, spec: Spec, prog: "_Progress",
                 capture_macs: dict | None = None) -> _Checked:
    gm, pruned = cap.gm, removed.pruned
    batches = _check_batches(cap)
    prog.tick(0.2, "running the pruned model and the masked original")
    out_labels = analysis.output_labels if analysis is not None else []
    removal = removed.removal if removed.removal is not None else Removal(np.zeros(0, dtype=bool))
    samples: list = []
    counted: dict = {}
    result = check_mod.verify(pruned, removed.reference, out_labels, removal, sigs, batches, spec.seed, spec.tolerance,
                              outputs=samples, macs=counted)
    prog.tick(0.7, f"check passed (max relative deviation {result.max_rel:.2e}); counting MACs")
    before = cap.before if cap.before is not None else gm  # the capture of the upload, as uploaded
    normalized = (_normalized_change(before, analysis, removed, sigs, batches, spec, samples)
                  if analysis is not None else None)
    macs_before, macs_after = _check_macs(before, pruned, _one_input(cap, sigs, spec), capture_macs or {}, counted)
    return _Checked(result, batches, macs_before, macs_after,
                    count_parameters(before), count_parameters(pruned), normalized, samples)


def _check_macs(before: fx.GraphModule, pruned: fx.GraphModule, one: tuple, capture_macs: dict,
                counted: dict) -> tuple[int, int]:
    """The report's MACs before and after, at ``one``'s shapes (batch 1 where the batch is dynamic).

    The upload comparison ran the capture, and the check the pruned graph, at the first check
    batch under the MAC counter (``capture_macs``, ``counted``: :func:`count_macs`'s counter and
    formulas, on real tensors).  Those counts are the report's where they count the very graphs
    :func:`count_macs` would (the capture ``before``, which the inputs stage may have replaced in
    ``cap.gm``, and the pruned graph) at ``one``'s shapes, and no shape depends on the input
    values (unbacked symbols: ``nonzero``, ``.item()``; looked for in ``before``, which the pruned
    graph is cut from by ops that make none), where other inputs could count otherwise.  Anywhere
    else, or where a pass could not be counted, :func:`count_macs` runs on ``one`` as before."""
    shapes = [tuple(t.shape) for t in one if isinstance(t, torch.Tensor)]
    same_values = not _value_dependent_shapes(before)

    def take(got) -> int | None:
        return got[0] if got is not None and got[1] == shapes and same_values else None

    b = take(capture_macs.get("captured")) if capture_macs.get("graph") is before else None
    a = take(counted.get("after"))
    return (b if b is not None else count_macs(before, one), a if a is not None else count_macs(pruned, one))


def _value_dependent_shapes(gm: fx.GraphModule) -> bool:
    """Whether a shape in ``gm`` depends on the input values (an unbacked symbol in a node's
    recorded value, as ``nonzero`` or ``.item()`` give), or a node has no recorded value to tell."""
    from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if "val" not in node.meta:
            return True
        try:
            if free_unbacked_symbols(node.meta["val"]):
                return True
        except Exception:
            return True
    return False


def _normalized_change(before, analysis, removed: _Removed, sigs, batches, spec: Spec,
                       samples: list | None = None) -> dict | None:
    """``normalized_dims: prune``: which statistics now run over fewer channels, and how far the
    pruned model's output moved from the upload's (the function changed by design)."""
    if spec.normalized_dims != "prune":
        return None
    changed = renormalised(removed.pruned, analysis, removed.removal)
    info: dict = {"mode": "prune", "ops_renormalised": len(changed), "ops": changed[:20],
                  "function_changed": bool(changed),
                  "reference": ("the upload with the removed channels masked and these ops' statistics taken over "
                                "the kept channels" if changed else "the upload with the removed channels masked")}
    if changed:
        info["output_change"] = check_mod.output_change(before, removed.pruned, analysis.output_labels,
                                                        removed.removal, sigs, batches, spec.seed, samples)
    return info


def _export_stage(load: _Load, cap, pruned: fx.GraphModule, checked: _Checked, spec: Spec, out_dir: Path,
                  prog: "_Progress") -> _Exported:
    exported = _write_and_prove(load, cap, pruned, checked, spec, out_dir, prog, compact=False)
    if load.out_fmt == "export" and _bytes_larger(load, exported):
        # a small program whose graph text outweighs its weights: write it again without the
        # nodes' stack traces (debugging text) before calling it larger than its upload
        _remove(exported.artifacts)
        exported = _write_and_prove(load, cap, pruned, checked, spec, out_dir, prog, compact=True)
    try:
        _never_larger(load, cap, checked, exported)
    except OutputLarger:
        _remove(exported.artifacts)
        raise
    return exported


def _write_and_prove(load: _Load, cap, pruned: fx.GraphModule, checked: _Checked, spec: Spec, out_dir: Path,
                     prog: "_Progress", *, compact: bool) -> _Exported:
    artifacts, load_back = export_mod.write(
        pruned, load.out_fmt, out_dir, cap.example, cap.dynamic_batch, sigs=load.sigs,
        architecture=load.loaded.architecture or spec.architecture, config=load.loaded.config,
        state_names=list(_original_state_names(load.loaded, cap.gm)), compact=compact,
    )
    prog.tick(0.6, "loading the written model back to prove it")
    model = _prove_artifact(load_back, checked.samples, spec, artifacts)
    return _Exported(artifacts, model, count_parameters(model), artifacts[ARTIFACT_NAMES[load.out_fmt]].stat().st_size)


def _bytes_larger(load: _Load, exported: _Exported) -> bool:
    """Same format as the upload, and more bytes than it (another format carries other overhead)."""
    return (load.out_fmt == load.loaded.format and bool(load.loaded.size_bytes)
            and exported.file_size > load.loaded.size_bytes)


def _never_larger(load: _Load, cap, checked: _Checked, exported: _Exported) -> None:
    """No output is larger than its upload: in unique parameters (a tie cut apart would add one),
    and in file size where it is written in the upload's own format (another format carries
    other overhead: a traced graph's code, a manifest, asked for by the user)."""
    before = max(load.upload_params, checked.params_before)
    if exported.params_after > before:
        raise OutputLarger(
            f"the written model has {exported.params_after:,} unique parameters, more than the upload's {before:,} "
            "(a tensor the upload shares under several names was written more than once?): it is not handed out"
        )
    if _bytes_larger(load, exported):
        raise OutputLarger(
            f"the written {load.out_fmt} file has {exported.file_size:,} bytes, more than the upload's "
            f"{load.loaded.size_bytes:,}: it is not handed out"
        )


def _report(load: _Load, cap, names: dict[str, str], analysis, chosen: _Setting, exported: _Exported | None,
            timings: dict[str, float], sweep=None) -> PruneReport:
    """The report, built from the stages' results (and nothing else)."""
    loaded, removed, checked = load.loaded, chosen.removed, chosen.checked
    after = _tensors(removed.pruned)
    warnings = [humanize_symbols(w, names) for w in cap.warnings]
    structured = analysis is not None
    if structured:
        plan = chosen.plan
        warnings += [f"channels stop at {op}: no channel rule (they are kept)" for op in sorted({b.op for b in analysis.barriers})]
        warnings += plan.warnings
        groups = {
            "channels_before": sum(len(g.roots) for g in plan.groups), "channels_removed": len(plan.removed),
            "groups_found": len(plan.groups),
            "groups_pruned": sum(1 for g in plan.groups if g.remove is not None and len(g.remove)),
            "groups": [g.to_dict() for g in plan.groups],
            "barriers": [{"node": b.node, "op": b.op, "reason": b.reason} for b in analysis.barriers],
            "kept": [{"param": n, "reason": why} for n, why in plan.pinned_reasons.items()],
            "attention": attention_heads(analysis, removed.removal) or None,
        }
    else:
        groups = {}
    data = {}
    if load.cal is not None:
        cal = load.cal
        data = {"samples": cal.samples, "train_samples": len(cal.train_index), "holdout_samples": len(cal.holdout_index),
                "batch_size": cal.batch_size, "num_batches": cal.num_batches, "loss": cal.loss, "inputs": cal.names}
    return PruneReport(
        input_format=loaded.format, output_format=load.out_fmt, architecture=loaded.architecture,
        method=chosen.spec.method, importance=chosen.spec.importance,
        params_before=checked.params_before,
        params_after=exported.params_after if exported else checked.params_after,
        macs_before=checked.macs_before, macs_after=checked.macs_after,
        file_size_before=loaded.size_bytes, file_size_after=exported.file_size if exported else 0,
        dynamic_batch=cap.dynamic_batch,
        layers=[LayerChange(n, list(t.shape), list(after[n].shape)) for n, t in removed.tensors.items()
                if n in after and tuple(after[n].shape) != tuple(t.shape)],
        check=checked.result.to_dict(), timings=dict(timings), warnings=warnings,
        calibration=data, evaluation=chosen.evaluation, sparsity=chosen.extra.get("sparsity"),
        target=chosen.extra.get("target"), importance_details=chosen.extra.get("importance"),
        batch_norm=chosen.extra.get("calibration"), inputs=chosen.extra.get("inputs"),
        from_zeros=chosen.extra.get("from_zeros"), sweep=sweep.to_dict() if sweep is not None else None,
        normalized_dims=checked.normalized,
        **groups,
    )


def _original_state_names(loaded: LoadedModel, gm: fx.GraphModule) -> list[str]:
    if loaded.module is not None and not isinstance(loaded.module, torch.jit.ScriptModule):
        return list(loaded.module.state_dict().keys())
    return list(gm.state_dict().keys())


def _prove_artifact(load_back, samples: list, spec: Spec, artifacts: dict[str, Path]) -> nn.Module:
    """Load the written file and make sure it computes what the checked pruned graph computed.

    ``samples`` are the check's own ``(batch, inputs, outputs of the pruned graph)`` at every batch
    size it ran: the file is loaded once and run once, on the inputs of the largest batch the
    check ran (not the capture's batch, so a batch size baked into the file fails), and must give
    the outputs the checked graph gave there.  The pruned graph already ran at every batch size
    in the check; the proof only has to show that the file is that graph.  That batch is drawn at
    the second size of every other dynamic dimension too: a file that runs at the first sizes but
    not there takes fewer input sizes than the upload (``input_sizes_lost``)."""
    try:
        model = load_back()
    except ExportFailed:
        _remove(artifacts)
        raise
    except Exception as exc:
        _remove(artifacts)
        raise ExportFailed(f"the written model does not load back: {first_line(exc)}") from None
    last = sorted(samples, key=lambda s: s[0])[-1:]
    for b, x, ref in last:
        with torch.no_grad():
            try:
                got = model(*x)
            except Exception as exc:
                _remove(artifacts)
                if _runs_at_first_sizes(model, samples, x):  # so these sizes are what it lost
                    raise InputSizesLost(
                        f"the written model does not run at {check_mod.where(b, x)}, which the upload and the checked "
                        f"pruned model take ({first_line(exc)}): it accepts fewer input sizes than the upload, so it "
                        "is not handed out"
                    ) from None
                raise ExportFailed(
                    f"the written model does not run at batch {b}: {first_line(exc)}"
                    + ("; the architecture's forward may hard-code widths, ask for output_format 'torchscript' or 'export'"
                       if MANIFEST_NAME in artifacts else "")
                ) from None
        dev = check_mod.compare_outputs(ref, got, dtypes=False)
        if dev.problem or dev.max_rel > 1e-4:
            _remove(artifacts)
            why = dev.problem or f"deviates by {dev.max_rel:.3g} (relative)"
            raise ExportFailed(f"the written model computes something else than the checked pruned model at batch {b}: {why}")
    return model


def _runs_at_first_sizes(model, samples: list, x: tuple) -> bool:
    """Whether a written model that failed on ``x`` runs on the check's first inputs, drawn at
    other sizes (the example's sequence length, batch 1): then what it lost are input sizes.
    Costs a run only when the proof has already failed."""
    first = samples[0][1]
    if [tuple(t.shape) for t in first if isinstance(t, torch.Tensor)] == [tuple(t.shape) for t in x if isinstance(t, torch.Tensor)]:
        return False
    try:
        with torch.no_grad():
            model(*first)
    except Exception:
        return False
    return True


def _remove(artifacts: dict[str, Path]) -> None:
    for p in artifacts.values():
        Path(p).unlink(missing_ok=True)


def prune(model: Any, spec: "Spec | dict | str | Path", *, inputs: "str | Path | None" = None,
          progress: ProgressCallback | None = None, rules: RulesArg = None, calibration: Any = None) -> PruneResult:
    """Prune ``model`` (a file path, bytes, an ``nn.Module`` or a ``ScriptModule``) following ``spec``.

    Returns the pruned, checked model (a ``torch.fx.GraphModule``) and its report; writes nothing.
    Raises :class:`prunekit.PruneKitError` subclasses for anything the caller can fix.
    ``rules`` teaches the analysis ops it has no rule for (a :class:`prunekit.RuleSet` or a dict
    ``{op: prunekit.Rule}``, or a list of them); they win over the built-in rules for their ops.
    ``calibration`` is the user's data (a ``.safetensors`` path or bytes, or a dict of tensors
    ``{"inputs": ..., "targets": ...}``): the data-driven criteria, ``recalibrate_bn``, sweeps and
    the report's ``evaluation`` use it.
    """
    return _run(model, parse_spec(spec), Path(inputs) if inputs else None, progress, None, rules,
                _calibration_arg(calibration))


def _calibration_arg(calibration: Any) -> Any:
    if calibration is None or isinstance(calibration, (bytes, bytearray, dict)):
        return calibration
    return Path(calibration)


def prune_to_dir(model_path: "str | Path", spec: "Spec | dict | str | Path", out_dir: "str | Path", *,
                 inputs_path: "str | Path | None" = None, progress: ProgressCallback | None = None,
                 rules: RulesArg = None, calibration_path: "str | Path | None" = None) -> PruneResult:
    """Prune the file at ``model_path`` and write the model, ``report.json`` (and for state-dict
    outputs ``manifest.json``) into ``out_dir``, each file atomically.  ``result.model`` is the
    written model loaded back.  With a sweep, ``sweep.json`` and ``sweep.png`` are written too."""
    return _run(Path(model_path), parse_spec(spec), Path(inputs_path) if inputs_path else None, progress, Path(out_dir),
                rules, _calibration_arg(calibration_path))
