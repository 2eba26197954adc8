"""The images of each role in ``lraee run`` (one definition, used by every stage), and the leakage check.

Roles and their defaults (``data`` section of the run config):

==============  =============================================================================
eval            ``source`` (its ``eval`` split for the procedural set; ``eval_n`` images)
train           ``train_source`` or, for the procedural set, ``source``'s ``train`` split
gating          ``gating_source`` or, for the procedural set, ``source``'s ``gating`` split
calibration     ``calibration_source`` or a seeded slice of the train source (the procedural
                set: its ``calibration`` split); INT8 calibration, the QIRC profile and the
                exit-tap scales all read it
==============  =============================================================================

Folder sources of train, gating and calibration take the eval source's class names and indices
(matched by folder name). :func:`check_sources` opens them all before any backbone pass and
refuses a folder eval source without its own train and gating sources, and any calibration,
gating or train images that are also eval images (same file: device and inode).
"""
from __future__ import annotations

from dataclasses import dataclass

from analysis.data.sources import ImageSource, open_source
from common.errors import InputError


def _is_folder(spec: str | None) -> bool:
    return bool(spec) and spec.split(":", 1)[0] in ("folder", "imagenet")


@dataclass(frozen=True)
class RoleSpec:
    """Where one role's images come from: ``open_source(spec, split, n, classnames, like=eval)``."""

    role: str
    field: str
    spec: str
    split: str
    n: int | None


def _data(cfg):
    """The ``data`` section of a run config, or the section itself (:class:`analysis.settings.DataCfg`)."""
    return getattr(cfg, "data", cfg)


def role_specs(cfg) -> dict[str, RoleSpec]:
    """{role: RoleSpec} of a run config or its data section (see module docstring)."""
    d = _data(cfg)
    train = d.train_source or d.source
    return {
        "eval": RoleSpec("eval", "data.source", d.source, "eval", d.eval_n),
        "train": RoleSpec("train", "data.train_source", train, "train", d.train_n),
        "gating": RoleSpec("gating", "data.gating_source", d.gating_source or d.source, "gating", d.gating_n),
        "calibration": RoleSpec("calibration", "data.calibration_source", d.calibration_source or train,
                                "calibration", d.profile_n),
    }


def open_role(cfg, role: str, n: int | None = None, eval_source: ImageSource | None = None) -> ImageSource:
    """The images of ``role`` (``n`` overrides the configured count)."""
    r = role_specs(cfg)[role]
    like = None
    if role in ("train", "gating"):  # labelled like the eval set; calibration needs no labels
        like = eval_source if eval_source is not None else open_role(cfg, "eval")
    return open_source(r.spec, r.split, r.n if n is None else n, _data(cfg).classnames, like=like)


def check_sources(cfg) -> dict[str, ImageSource]:
    """Open every role's images and refuse leakage (see module docstring); one-line InputError."""
    d = _data(cfg)
    if _is_folder(d.source):
        for field, v in (("data.train_source", d.train_source), ("data.gating_source", d.gating_source)):
            if not v:
                raise InputError(f"{field}: missing; with a folder eval source ({d.source}) the run needs its own "
                                 f"{field.split('.')[1].split('_')[0]} images; allowed: folder:PATH or imagenet:PATH "
                                 "of other images than the eval set")
    specs = role_specs(cfg)
    srcs = {"eval": open_role(cfg, "eval")}
    for role in ("train", "gating", "calibration"):
        try:
            srcs[role] = open_role(cfg, role, eval_source=srcs["eval"])
        except InputError as e:
            raise InputError(f"{specs[role].field}: {e}") from None
        if srcs[role].overlaps(srcs["eval"]):
            raise InputError(f"{specs[role].field}: {specs[role].spec} shares images with the eval source "
                             f"{specs['eval'].spec} (same files); allowed: {role} images disjoint from eval")
    return srcs
