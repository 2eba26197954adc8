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
    if spec == "paper":
        return spec, list(PAPER_TEMPLATES)
    if spec == "simple":
        from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

        return spec, [t("{}") for t in SIMPLE_IMAGENET_TEMPLATES]
    if spec == "openai":
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return spec, [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    if str(spec).strip() == "":
        raise InputError(f"--templates '': empty; allowed: {', '.join(TEMPLATE_SETS)} or a text file")
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"--templates {spec!r}: unknown template set; allowed: {', '.join(TEMPLATE_SETS)} "
                         "or a text file with one template containing {} per line")
    from common.readers import read_text

    lines = [ln.strip() for ln in read_text(path, "--templates", TEMPLATE_FILE_RULE).splitlines()]
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln and not ln.startswith("#")]
    if not numbered:
        raise InputError(f"--templates {path}: the file has no templates; allowed: {TEMPLATE_FILE_RULE}")
    for lineno, t in numbered:
        problem = template_problem(t)
        if problem:
            raise InputError(f"--templates {path}: line {lineno} {t!r}: {problem}; allowed: {TEMPLATE_FILE_RULE}")
    return str(path), [t for _, t in numbered]


TEMPLATE_FILE_RULE = ("one template per line with exactly one {} (the class name), other braces doubled as {{ }}; "
                      "blank lines and # comments skipped")


def template_problem(t: str) -> str | None:
    """Why ``t`` cannot be a prompt template (``t.format(name)``), or None when it can: it must hold
    exactly one empty replacement field ``{}``; literal braces are written ``{{`` and ``}}``."""
    import string

    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(t) if f is not None]
    except ValueError as e:  # unbalanced braces
        return f"unbalanced braces ({e})"
    if not fields:
        return "no {} placeholder"
    named = [name for name, _, _ in fields if name != ""]
    if named:
        return f"placeholder {{{named[0]}}} is not allowed (only an empty {{}})"
    if len(fields) > 1:
        return f"{len(fields)} {{}} placeholders (exactly one allowed)"
    _, spec, conv = fields[0]
    if spec or conv:
        return "the {} placeholder may not carry a format spec or conversion"
    return None
