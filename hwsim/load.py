"""Latency under load: service vs sojourn latency, Poisson arrivals at a stated load.

Closed arrivals (every sample at t=0) measure throughput; their latency is mostly queueing
(sample i waits for the i-1 before it). Here:

* **service latency**: start of the sample's service (its group entering the accelerator,
  or stage 1 of a pipeline) to its result; **sojourn latency**: arrival to result.
* **load** rho: Poisson arrivals (seeded, ``arrivals.seed``) at ``rho x`` the accelerator's
  full-depth throughput (the same trace at full depth, closed arrivals), so rho = 1 is the
  rate the no-exit encoder saturates at. Early exit frees capacity, so rho can approach or
  pass 1 with a stable queue when enough samples exit.
* **SLO attainment**: the fraction of samples whose sojourn latency is at most the SLO (us).

:func:`simulate` picks the evaluator: the pipelined closed form (:mod:`hwsim.pipelined`),
the overlapped evaluator (:func:`hwsim.overlap.evaluate_overlapped`: closed form for static
and stream, SimPy for regroup) or the SimPy replay (:mod:`hwsim.replay`).
"""
from __future__ import annotations

import numpy as np

from quant.geometry import EncoderGeometry

from .config import ArchConfig
from .trace import ExitTrace

DEFAULT_LOADS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def simulate(arch: ArchConfig, geometry: EncoderGeometry, trace: ExitTrace, table=None) -> dict:
    """One run of ``trace`` on ``arch`` with per-sample ``finish_cycles``, ``start_cycles``,
    ``arrival_cycles``; ``evaluator`` names the model used. Operand widths the arch leaves
    unset follow the trace's recipe (:func:`hwsim.config.with_trace_precision`)."""
    from .config import with_trace_precision
    arch, _ = with_trace_precision(arch, trace.meta)
    if arch.architecture == "pipelined":
        from .pipelined import evaluate_pipelined
        s = evaluate_pipelined(arch, geometry, trace)
        s["evaluator"] = "pipelined"
        return s
    from .costs import build_costs
    from .energy import table_for
    costs = build_costs(arch, geometry, trace.num_classes, arch.effective_batch, table or table_for(arch.energy))
    if arch.overlap:
        from .overlap import evaluate_overlapped
        s = evaluate_overlapped(arch, costs, trace)
        return s
    from .replay import replay
    s = replay(arch, costs, trace)
    s["evaluator"] = "replay"
    return s


def with_arrivals(arch: ArchConfig, mode: str, rate_per_s: float | None = None) -> ArchConfig:
    upd = {"mode": mode}
    if rate_per_s is not None:
        upd["rate_per_s"] = float(rate_per_s)
    return arch.model_copy(update={"arrivals": arch.arrivals.model_copy(update=upd)})


def capacity_img_s(arch: ArchConfig, geometry: EncoderGeometry, trace: ExitTrace) -> float:
    """Full-depth throughput (images/s) of ``arch``: the trace at full depth, closed arrivals."""
    return simulate(with_arrivals(arch, "closed"), geometry, trace.full_depth())["throughput_img_s"]


def at_load(arch: ArchConfig, geometry: EncoderGeometry, trace: ExitTrace, load: float, capacity: float,
            slo_us: float) -> dict:
    """One Poisson run at ``load`` x ``capacity`` images/s: a row of the load sweep."""
    rate = load * capacity
    s = simulate(with_arrivals(arch, "poisson", rate), geometry, trace)
    soj, svc = s["_latency_us"], s["_service_latency_us"]
    extra = {}
    if "pipeline" in s:   # the conditional buffers are sized at this load (closed arrivals overfill them)
        extra["conditional_buffers"] = [{k: b[k] for k in ("layer", "depth_samples", "kib")}
                                        for b in s["pipeline"]["conditional_buffers"]]
    return extra | {"load": float(load), "rate_img_s": rate, "throughput_img_s": s["throughput_img_s"],
            "sojourn_p50_us": float(np.percentile(soj, 50)), "sojourn_p99_us": float(np.percentile(soj, 99)),
            "service_p50_us": float(np.percentile(svc, 50)), "service_p99_us": float(np.percentile(svc, 99)),
            "slo_us": float(slo_us), "slo_attainment": float((soj <= slo_us).mean()),
            "energy_per_image_uj": s["energy_per_image_uj"]["total"], "evaluator": s["evaluator"]}


def load_sweep(arch: ArchConfig, geometry: EncoderGeometry, trace: ExitTrace, loads=DEFAULT_LOADS,
               slo_us: float | None = None) -> dict:
    """Rows of :func:`at_load` for every load. ``slo_us`` default: 2 x the full-depth service
    latency p99 (closed arrivals), stated in the result."""
    full = simulate(with_arrivals(arch, "closed"), geometry, trace.full_depth())
    cap = full["throughput_img_s"]
    if slo_us is None:
        slo_us = 2.0 * full["service_latency_us"]["p99"]
    return {"capacity_img_s": cap, "slo_us": float(slo_us), "arrival_seed": arch.arrivals.seed,
            "rows": [at_load(arch, geometry, trace, rho, cap, slo_us) for rho in loads]}
