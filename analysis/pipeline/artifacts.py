"""Where ``lraee run`` keeps its files: the one manifest the stages write to and the report reads.

Every path is relative to the run folder (the runner works inside it, so results never depend on
where the folder is). One folder per stage, named after the stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFiles:
    """The files of a run folder ``root`` (``Path('.')`` inside the runner)."""

    root: Path = Path(".")

    def stage(self, name: str) -> Path:
        """The folder of stage ``name``."""
        return self.root / name

    # model
    @property
    def model_json(self) -> Path:
        return self.stage("model") / "model.json"

    @property
    def geometry_json(self) -> Path:
        return self.stage("model") / "geometry.json"

    # calibration and profile
    @property
    def calibration(self) -> Path:
        """The calibration state (safetensors); its JSON sidecar is :attr:`calibration_json`."""
        return self.stage("calibration") / "calibration.safetensors"

    @property
    def calibration_json(self) -> Path:
        return self.calibration.with_suffix(".json")

    @property
    def profile_json(self) -> Path:
        return self.stage("profile") / "profile.json"

    @property
    def profile_png(self) -> Path:
        return self.stage("profile") / "profile.png"

    @property
    def features_manifest(self) -> Path:
        return self.stage("features") / "manifest.json"

    # exit policy (folder of lraee train-exits + thresholds)
    @property
    def policy(self) -> Path:
        return self.stage("exits")

    @property
    def policy_files(self) -> list[Path]:
        return [self.policy / n for n in ("policy.json", "policy.safetensors", "gating.safetensors", "pareto.json")]

    @property
    def pareto_json(self) -> Path:
        return self.policy / "pareto.json"

    # trace (lraee exit-report)
    @property
    def results_json(self) -> Path:
        return self.stage("trace") / "results.json"

    @property
    def trace_csv(self) -> Path:
        return self.stage("trace") / "trace.csv"

    @property
    def trace_meta(self) -> Path:
        return self.stage("trace") / "trace.meta.json"

    TRACE_PLOTS = ("pareto.png", "exit_distribution.png", "cls_vs_ssa.png")

    def trace_plot(self, name: str) -> Path:
        return self.stage("trace") / name

    # the precision x exit sweep (one folder per recipe it ran itself; the main recipe's are the run's own)
    @property
    def sweep(self) -> Path:
        return self.stage("sweep")

    @property
    def sweep_json(self) -> Path:
        return self.sweep / "sweep.json"

    @property
    def sweep_files(self) -> list[Path]:
        return [self.sweep / n for n in ("sweep.json", "sweep.csv", "sweep.png")]

    # the AdaViT baseline at LRA-EE's saving
    @property
    def adavit_json(self) -> Path:
        return self.stage("adavit") / "adavit.json"

    # fixed point, HLS, RTL
    @property
    def validate_json(self) -> Path:
        return self.stage("fixedpoint") / "validate.json"

    @property
    def fixedpoint_spec(self) -> Path:
        return self.stage("fixedpoint") / "fixedpoint_spec.json"

    def fixedpoint_plots(self) -> list[Path]:
        return sorted(self.stage("fixedpoint").glob("*.png"))

    @property
    def hls_report(self) -> Path:
        return self.stage("hls") / "hls_report.json"

    @property
    def rtl_report(self) -> Path:
        return self.stage("rtl") / "rtl_report.json"

    # hwsim
    @property
    def sim(self) -> Path:
        return self.stage("hwsim") / "sim"

    @property
    def sim_summary(self) -> Path:
        return self.sim / "summary.json"

    @property
    def dse(self) -> Path:
        return self.stage("hwsim") / "dse"

    def compare(self, variant: str) -> Path:
        """The folder of one side-by-side hardware design (static, regroup, stream, pipelined)."""
        return self.stage("hwsim") / "compare" / variant

    # report
    @property
    def report(self) -> Path:
        return self.stage("report")
