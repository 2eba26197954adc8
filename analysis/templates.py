"""Prompt template sets for zero-shot class embeddings.

- ``paper``: the paper's 5-template ensemble. The paper names two ("a photo of a {}",
  "a clear photo of a {}"); the other three are our choice and are stated here.
- ``simple``: open_clip's SIMPLE_IMAGENET_TEMPLATES (7).
- ``openai``: open_clip's OPENAI_IMAGENET_TEMPLATES (80).
- a path to a text file: one template per line containing ``{}`` (blank lines and lines
  starting with ``#`` are skipped).
"""
from __future__ import annotations

from pathlib import Path

from common.errors import InputError

PAPER_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a clear photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
)
TEMPLATE_SETS = ("paper", "simple", "openai")


def resolve_templates(spec: str) -> tuple[str, list[str]]:
    """Return (name, templates) for a set name or a file path; InputError otherwise."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    if spec == "paper":
        return spec, list(PAPER_TEMPLATES)
    if spec == "simple":
        return spec, [t("{}") for t in SIMPLE_IMAGENET_TEMPLATES]
    if spec == "openai":
        return spec, [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"--templates {spec!r}: unknown template set; allowed: {', '.join(TEMPLATE_SETS)} "
                         "or a text file with one template containing {} per line")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    templates = [ln for ln in lines if ln and not ln.startswith("#")]
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise InputError(f"--templates {path}: every template line must contain {{}}"
                         + (f" (first bad line: {bad[0]!r})" if bad else " (file has none)"))
    return str(path), templates
