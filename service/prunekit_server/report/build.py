"""The report stage: a job's measured facts (:class:`.facts.Facts`) turned into an ``OptimizationReport``.

:func:`assemble_report` measures what is left to measure (the variants' files,
the pruned model's MACs), makes AUTO's choice and the warnings, and puts the
pieces together with :func:`build_report` (pure: messages in, the report out).

Per variant: parameters and non-zeros counted in its ONNX file, MACs (a
quantized variant keeps the MACs of the model it was made from: quantization
changes their precision, not their count), sizes of its file, every latency
measurement, quality against the original, accuracy (the baseline's too)
when the eval data had labels or targets, flags. AUTO's choice is made here,
per source model, from the measured numbers (:func:`select_fastest`): the
fastest candidate meeting the quality rule and, when accuracy was measured
and ``max_accuracy_drop`` > 0, the accuracy rule as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from prunekit.v1 import model_pb2, report_pb2

from ..measure.accuracy import AccuracyRule
from ..measure.analysis import analyze, count_parameters
from ..measure.evaluation import NO_EVAL_DATA
from ..measure.latency import cpu_model, stability_rule
from ..measure.names import BASELINE, ORIGINAL, PRUNED
from ..measure.quality import Quality, QualityRule
from ..measure.size import compressed_size, serialized_size
from ..pruning import UnstructuredConfig
from ..quantization import SELECTION_RULE, Candidate, select_fastest
from . import accuracy as ra
from . import notes
from . import stats as rs
from .accuracy import below_accuracy_rule
from .facts import Facts, Variant
from .flags import variant_flags, variant_warnings
from .protocol import benchmark_protocol
from .search import mark_selected, search_report

ACCURACY_SELECTION = "; with an accuracy rule, also within max_accuracy_drop of the baseline's top-1"


def _layer_macs(analysis: model_pb2.ModelAnalysis) -> dict[str, int]:
    return {layer.name: int(layer.macs) for layer in analysis.layers}


def _auto_choices(facts: Facts) -> tuple[dict[str, bool], list[report_pb2.ReportWarning]]:
    """Variant name -> selected or not, for each AUTO candidate and the unquantized model it competed with."""
    if not facts.auto:
        return {}, []
    choices: dict[str, bool] = {}
    warnings: list[report_pb2.ReportWarning] = []
    timings = facts.timings
    perfect = Quality(1.0, 1.0, 0.0, facts.settings.samples)
    for source in (PRUNED, ORIGINAL):
        members = [v for v in facts.variants if v.auto_candidate and v.source == source]
        if not members:
            continue
        plain = PRUNED if source == PRUNED else BASELINE
        quality = facts.fidelity.get(plain, perfect)
        candidates = [Candidate(plain, timings.primary(plain).p50_ms, quality)]
        candidates += [
            Candidate(v.name, timings.primary(v.name).p50_ms, facts.fidelity[v.name]) for v in members
        ]
        winner = select_fastest(
            [c for c in candidates if _accurate_enough(facts, c.name)], facts.settings.rule
        )
        for candidate in candidates:
            if candidate.name != BASELINE:
                choices[candidate.name] = candidate.name == winner
        if winner is None:
            judged = facts.accuracy_rule.judges(facts.accuracies.get(BASELINE))
            warnings.append(notes.auto_no_candidate(source, accuracy_rule=judged))
        elif winner == plain:
            warnings.append(notes.auto_kept_unquantized(source, plain))
    return choices, warnings


def _accurate_enough(facts: Facts, name: str) -> bool:
    """False only when the accuracy rule can judge ``name`` and it misses it."""
    baseline = facts.accuracies.get(BASELINE)
    return facts.accuracy_rule.met_by(facts.accuracies.get(name), baseline) is not False


def _stats(
    facts: Facts, variant: Variant, pruned_analysis: model_pb2.ModelAnalysis | None
) -> report_pb2.ModelStats:
    model = onnx.load(str(variant.onnx_path))
    params, nonzero = count_parameters(model)
    if variant.source == PRUNED and pruned_analysis is not None:
        macs = pruned_analysis.macs
    else:
        macs = facts.base_analysis.macs
    return rs.model_stats(
        parameters=params,
        nonzero_parameters=nonzero,
        macs=macs,
        size_bytes=variant.onnx_path.stat().st_size,
        compressed_size_bytes=compressed_size(variant.onnx_path),
        latencies=facts.timings.by_model[variant.name],
        quality=facts.fidelity[variant.name],
        accuracy=facts.accuracies.get(variant.name),
    )


def assemble_report(facts: Facts) -> report_pb2.OptimizationReport:
    """The report of a job from its facts (artifact URIs stay empty for the server to fill)."""
    ingested, settings, timings = facts.ingested, facts.settings, facts.timings
    inputs = list(ingested.inputs)
    base_model = ingested.onnx_model
    base_params, base_nonzero = count_parameters(base_model)
    baseline = rs.model_stats(
        parameters=base_params,
        nonzero_parameters=base_nonzero,
        macs=facts.base_analysis.macs,
        size_bytes=serialized_size(base_model),
        compressed_size_bytes=compressed_size(base_model.SerializeToString()),
        latencies=timings.by_model[BASELINE],
        accuracy=facts.accuracies.get(BASELINE),
    )
    pruned = facts.pruned
    pruned_analysis = None
    if pruned is not None:
        pruned_analysis = analyze(
            pruned.model,
            inputs,
            source_format=ingested.source_format,
            size_bytes=pruned.variant.onnx_path.stat().st_size,
        )
    choices, auto_warnings = _auto_choices(facts)
    variants = []
    for variant in facts.variants:
        proto = rs.model_variant(
            variant.name,
            _stats(facts, variant, pruned_analysis),
            variant.files,
            baseline,
            source=variant.source,
            quantization=notes.quantization_info(variant.quantization) if variant.quantization else None,
        )
        proto.flags.extend(
            variant_flags(
                proto,
                baseline,
                settings.rule,
                selected=choices.get(variant.name),
                accuracy_rule=facts.accuracy_rule,
                finetuned=variant.name in facts.finetuned,
            )
        )
        variants.append(proto)
    layers: list[report_pb2.LayerChange] = []
    if pruned is not None and pruned_analysis is not None:
        layers = rs.layer_changes(
            pruned.result.layers, _layer_macs(facts.base_analysis), _layer_macs(pruned_analysis)
        )
    warnings = _warnings(facts, auto_warnings)
    if facts.search is not None:
        warnings += mark_selected(variants, facts.selected, facts.search)
    report = build_report(
        input_format=model_pb2.ModelFormat.ValueType(ingested.source_format),
        baseline=baseline,
        variants=variants,
        layers=layers,
        protocol=_protocol(facts),
        warnings=warnings,
        rule=settings.rule,
        accuracy_rule=facts.accuracy_rule,
        data=facts.data,
        finetune=facts.finetune,
    )
    if facts.search is not None:
        report.search.CopyFrom(search_report(facts.search))
    if pruned is not None:  # the curves of a sensitivity analysis the pruning ran (auto_ratios)
        report.sensitivity.extend(
            report_pb2.SensitivityCurve(
                layer=c.layer, metric=c.metric, ratios=list(c.ratios), values=list(c.values)
            )
            for c in pruned.result.sensitivity
        )
        report.schedule.extend(
            report_pb2.ScheduleStep(step=s.step, ratio=s.ratio, macs=s.macs, metric=s.metric, value=s.value)
            for s in pruned.result.schedule
        )
    return report


def _warnings(facts: Facts, auto_warnings: list[report_pb2.ReportWarning]) -> list[report_pb2.ReportWarning]:
    pruned = facts.pruned
    found = notes.upstream_warnings(facts.ingested.warnings, "MODEL_INGEST")
    if pruned is not None:
        found += notes.upstream_warnings(pruned.result.warnings, "PRUNE")
        found += notes.upstream_warnings(pruned.warnings, "TORCHSCRIPT_WEIGHTS_UNMAPPED")
        if isinstance(pruned.config, UnstructuredConfig):
            found.append(notes.unstructured_no_speedup(PRUNED))
    found += notes.upstream_warnings(facts.quantize_warnings, "QUANTIZE")
    found += notes.upstream_warnings(facts.extra_warnings, "FINETUNE")
    found += notes.upstream_warnings(facts.timings.warnings, "BENCHMARK")
    found += _evaluation_warnings(facts)
    if facts.calibration_inputs:
        found.append(notes.synthetic_calibration_warning(facts.calibration_inputs))
    found += auto_warnings
    unstable = sorted(
        {name for name, items in facts.timings.by_model.items() if not all(i.stable for i in items)}
    )
    if unstable:
        found.append(notes.latency_unstable_warning(unstable, facts.settings.max_seconds))
    return found


def _evaluation_warnings(facts: Facts) -> list[report_pb2.ReportWarning]:
    """What fidelity and accuracy could not be measured on, and an accuracy rule that cannot judge."""
    found: list[report_pb2.ReportWarning] = []
    if facts.evaluation is None or facts.evaluation.synthetic:
        found.append(notes.synthetic_inputs_warning(facts.fidelity_inputs))
    baseline = facts.accuracies.get(BASELINE)
    if baseline is None:
        note = facts.evaluation.accuracy_note if facts.evaluation is not None else NO_EVAL_DATA
        found.append(
            ra.accuracy_not_measured(note or NO_EVAL_DATA, facts.fidelity_inputs, facts.accuracy_rule)
        )
    elif facts.max_accuracy_drop > 0 and baseline.top1 is None:
        found.append(ra.accuracy_rule_not_judged(facts.accuracy_rule))
    return found


def _protocol(facts: Facts) -> report_pb2.BenchmarkProtocol:
    settings, timings = facts.settings, facts.timings
    everything = [latency for items in timings.by_model.values() for latency in items]
    return benchmark_protocol(
        timings.primary(BASELINE),
        inputs=facts.ingested.inputs,
        cpu_model=cpu_model(),
        quality_inputs=facts.fidelity_inputs,
        iterations=settings.iterations,
        batch_sizes=settings.batch_sizes,
        max_seconds=settings.max_seconds,
        stability_rule=stability_rule(settings.iterations, settings.max_seconds),
        stable=all(latency.stable for latency in everything),
        memory_method=timings.memory_method,
        quality_rule=settings.rule,
        selection_rule=_selection_rule(facts),
        max_accuracy_drop=facts.max_accuracy_drop,
    )


def _selection_rule(facts: Facts) -> str:
    if not facts.auto:
        return ""
    return SELECTION_RULE + (
        ACCURACY_SELECTION if facts.accuracy_rule.judges(facts.accuracies.get(BASELINE)) else ""
    )


def build_report(
    *,
    input_format: model_pb2.ModelFormat.ValueType,
    baseline: report_pb2.ModelStats,
    variants: Sequence[report_pb2.ModelVariant],
    layers: Sequence[report_pb2.LayerChange],
    protocol: report_pb2.BenchmarkProtocol,
    warnings: Sequence[report_pb2.ReportWarning] = (),
    rule: QualityRule | None = None,
    accuracy_rule: AccuracyRule | None = None,
    data: report_pb2.DataReport | None = None,
    finetune: report_pb2.FinetuneReport | None = None,
) -> report_pb2.OptimizationReport:
    """The full report: ``warnings`` first, then each variant's :func:`variant_warnings`.

    With an ``accuracy_rule``, one ``BELOW_ACCURACY_RULE`` warning names every
    variant that misses it. ``data`` and ``finetune`` are copied in when given.
    """
    found = list(warnings)
    for variant in variants:
        found += variant_warnings(variant, baseline, rule)
    if accuracy_rule is not None and (below := below_accuracy_rule(variants, baseline, accuracy_rule)):
        found.append(below)
    return report_pb2.OptimizationReport(
        baseline=baseline,
        variants=list(variants),
        layers=list(layers),
        warnings=found,
        protocol=protocol,
        input_format=input_format,
        data=data,
        finetune=finetune,
    )
