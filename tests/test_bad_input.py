"""Bad input, everywhere (issue 17): one line ``lraee CMD: error: ...`` naming the file, field and allowed
values, exit status 2, and nothing created or changed at the output paths.

One test per class of bad input (in-process ``analysis.cli.main`` calls), then a subprocess test of the
third-party warnings and a subprocess walk over every command of ``lraee --help``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOT_UTF8 = b"a photo of \xff\xfe a {}\n"


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (relative), to check that a failed command created nothing."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def one_line_error(rc, err: str, cmd: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"lraee {cmd}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture()
def cli(run_cli, tmp_path):
    """``cli(cmd, *args)``: run in-process, assert a one-line error and no new files under tmp_path."""
    def _run(cmd, *args, needle=None):
        before = tree(tmp_path)
        rc, _, err = run_cli(cmd, *args)
        line = one_line_error(rc, err, cmd)
        assert tree(tmp_path) == before, f"files left behind: {tree(tmp_path) - before}"
        if needle is not None:
            assert needle in line, line
        return line

    return _run


@pytest.fixture(scope="module")
def trace_files(tmp_path_factory):
    """A small valid exit trace (CSV + meta) of the tiny geometry."""
    from hwsim.trace import synthetic_trace, write_trace
    from quant.geometry import shipped_geometry

    d = tmp_path_factory.mktemp("trace")
    el, corr = synthetic_trace(40, 12, (4, 8), seed=0)
    write_trace(d / "trace.csv", el, (4, 8), 12, 25, correct=corr, geometry=shipped_geometry("lraee-tiny"))
    return d / "trace.csv"


# ---- templates --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, needle", [
    ("a {} {}\n", "2 {} placeholders"),
    ("a {adjective} {}\n", "placeholder {adjective}"),
    ("}{ {}\n", "unbalanced braces"),
    ("a {0}\n", "placeholder {0}"),
    ("a {!r}\n", "format spec or conversion"),
    ("no placeholder\n", "no {} placeholder"),
    ("# only a comment\n\n", "has no templates"),
])
def test_template_files_with_bad_placeholders(text, needle, tmp_path):
    from analysis.templates import resolve_templates
    from common.errors import InputError

    f = tmp_path / "t.txt"
    f.write_text(text)
    with pytest.raises(InputError, match="--templates") as e:
        resolve_templates(str(f))
    assert needle in str(e.value) and str(f) in str(e.value) and "allowed:" in str(e.value)


def test_template_literal_braces_are_fine(tmp_path):
    from analysis.templates import resolve_templates

    f = tmp_path / "t.txt"
    f.write_text("a {{quoted}} photo of a {}.\n")
    _, t = resolve_templates(str(f))
    assert [x.format("cat") for x in t] == ["a {quoted} photo of a cat."]


def test_eval_refuses_bad_template_file_in_one_line(cli, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("a {} of {}\n")
    cli("eval", "--templates", f, "--n", 2, "--out", tmp_path / "o" / "eval.json", needle="placeholders")


# ---- files that are not UTF-8, deeply nested YAML --------------------------------------------

def test_not_utf8_files_everywhere(cli, tmp_path, trace_files):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(NOT_UTF8)
    out = tmp_path / "out"
    cli("eval", "--templates", bad, "--n", 2, "--out", out / "e.json", needle="not UTF-8")
    cli("run", "--config", bad, "--out", out, needle="not UTF-8")
    cli("sim", "--arch", bad, "--trace", trace_files, "--out", out, needle="not UTF-8")
    cli("sim", "--scalesim-cfg", bad, "--topology", bad, "--out", out, needle="not UTF-8")
    cli("dse", "--space", bad, "--trace", trace_files, "--out", out, needle="not UTF-8")
    cli("thresholds", "--policy", tmp_path / "nope", needle="file not found")
    # a trace CSV that is not UTF-8 (its meta is fine)
    t = tmp_path / "t2.csv"
    t.write_bytes(trace_files.read_bytes() + b"\xff\xff,\xfe\n")
    Path(str(t).replace(".csv", ".meta.json")).write_bytes(trace_files.with_suffix(".meta.json").read_bytes())
    cli("sim", "--trace", t, "--out", out, needle="not UTF-8")


def test_deeply_nested_yaml_is_one_line(cli, tmp_path, trace_files):
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    cli("run", "--config", deep, "--out", tmp_path / "o", needle="nested more than")
    cli("sim", "--arch", deep, "--trace", trace_files, "--out", tmp_path / "o", needle="nested more than")
    cli("dse", "--space", deep, "--trace", trace_files, "--out", tmp_path / "o", needle="nested more than")


def test_readers_unit(tmp_path):
    from common.errors import InputError
    from common.readers import read_csv, read_json, read_text, read_yaml

    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert read_yaml(tmp_path / "bom.yaml") == {"a": 1}
    cases = [(read_text, tmp_path / "missing", "file not found"), (read_text, tmp_path / "d", "is a folder"),
             (read_text, tmp_path / "f" / "x", "parent of the path is a file"), (read_json, tmp_path / "f", "not valid JSON"),
             (read_yaml, tmp_path / "f", None)]
    for fn, p, needle in cases:
        if needle is None:
            assert fn(p) == "x"
            continue
        with pytest.raises(InputError, match=needle):
            fn(p)
    (tmp_path / "nul.csv").write_bytes(b"a,b\n1,\x00\n")
    with pytest.raises(InputError, match="NUL"):
        read_csv(tmp_path / "nul.csv")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(InputError, match=r"not valid YAML .*line"):
        read_yaml(tmp_path / "bad.yaml")


# ---- values: device, clock, grid, trace lists ----------------------------------------------

def test_unknown_device(cli, tmp_path):
    cli("eval", "--device", "foo", "--out", tmp_path / "o.json", needle="allowed: cpu, cuda or cuda:N")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("runtime: {device: tpu}\n")
    cli("run", "--config", cfg, "--out", tmp_path / "o", needle="runtime.device")


def test_infinite_clock(cli, tmp_path, trace_files):
    arch = tmp_path / "arch.yaml"
    arch.write_text("clock_mhz: .inf\n")
    cli("sim", "--arch", arch, "--trace", trace_files, "--out", tmp_path / "o", needle="clock_mhz")
    arch.write_text("clock_mhz: 1.0e+300\n")
    cli("sim", "--arch", arch, "--trace", trace_files, "--out", tmp_path / "o", needle="clock_mhz")
    cli("hls", "--policy", tmp_path, "--clock-mhz", "inf", "--out", tmp_path / "h", needle="--clock-mhz")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("hls: {clock_mhz: .inf}\n")
    cli("run", "--config", cfg, "--out", tmp_path / "o", needle="hls.clock_mhz")


def test_huge_threshold_grid(cli, tmp_path):
    cli("thresholds", "--policy", tmp_path, "--grid", "0.2:0.9:100000", needle="POINTS <= 1000")
    from exitlogic.policy import check_grid_size, parse_grid
    from common.errors import InputError

    with pytest.raises(InputError, match=r"1000\^3"):
        check_grid_size("0:1:1000", parse_grid("0:1:1000"), 3, "p")


def test_space_traces_of_the_wrong_type(cli, tmp_path, trace_files):
    for bad in ("traces: [1, 2]", "traces: {a: b}", "traces: 7", "area: {pe: x}", "base: 3", "seed: x"):
        sp = tmp_path / "space.yaml"
        sp.write_text(f"parameters: {{array.rows: [8, 16]}}\n{bad}\n")
        field = bad.split(":")[0]
        cli("dse", "--space", sp, "--trace", trace_files, "--out", tmp_path / "o", needle=f"{field}:")


# ---- output paths --------------------------------------------------------------------------

def test_out_that_is_a_file_or_under_a_file(cli, tmp_path, trace_files):
    f = tmp_path / "afile"
    f.write_text("keep me")
    cli("sim", "--trace", trace_files, "--out", f, needle="not a folder")
    cli("sim", "--trace", trace_files, "--out", f / "sub", needle="is a file, not a folder")
    cli("eval", "--n", 2, "--out", f / "e.json", needle="is a file, not a folder")
    cli("exit-report", "--policy", tmp_path, "--out", f, needle="not a folder")
    cli("run", "--out", f / "run", needle="is a file")
    cli("train-tiny", "--out", f / "w.safetensors", needle="is a file")
    cli("dse", "--space", tmp_path / "s.yaml", "--out", f, needle="not a folder")
    assert f.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder(cli, tmp_path, trace_files):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        cli("sim", "--trace", trace_files, "--out", ro / "o", needle="not writable")
        cli("eval", "--n", 2, "--out", ro / "e.json", needle="not writable")
    finally:
        ro.chmod(0o755)


def test_empty_out_never_means_the_current_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for cmd in ("exit-report", "hls", "validate-exits", "train-exits"):
        cli(cmd, "--policy", tmp_path / "p", "--out", "", needle="empty path")
    cli("sim", "--trace", "x.csv", "--out", "", needle="empty path")
    cli("eval", "--out", "", needle="empty path")


def test_checks_unit(tmp_path):
    from common.atomic import check_out_dir, check_out_file
    from common.errors import InputError

    assert check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()
    with pytest.raises(InputError, match="expected a .json file"):
        check_out_file(tmp_path / "x.txt", suffix=".json")
    with pytest.raises(InputError, match="is a folder"):
        check_out_file(tmp_path)


# ---- sizes -------------------------------------------------------------------------------------

def test_n_far_beyond_the_data(cli, tmp_path):
    cli("eval", "--n", 10 ** 12, "--out", tmp_path / "e.json", needle="at most 1,000,000 images per split")
    cli("features", "--n", 0, "--cache-dir", tmp_path / "c", needle="positive number of images")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("data: {train_n: 100000000}\n")
    cli("run", "--config", cfg, "--out", tmp_path / "o", needle="data.train_n")


def test_folder_n_is_capped_at_the_folder(tmp_path):
    from PIL import Image

    from analysis.data.sources import open_source

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / c / "x.png")
    assert len(open_source(f"folder:{tmp_path}", n=10 ** 12)) == 2


# ---- the pipeline config is checked at load ------------------------------------------------

@pytest.mark.parametrize("yaml_text, needle", [
    ("thresholds: {grid: '0.2:0.9:100000'}", "thresholds.grid"),
    ("thresholds: {grid: 'a:b'}", "thresholds.grid"),
    ("hls: {part: '$(rm -rf)'}", "--part"),
    ("hls: {clock_mhz: 1.0e+9}", "clock"),
    ("data: {templates: nope.txt}", "data.templates"),
    ("data: {source: 'web:x'}", "data.source"),
    ("exits: {exit_layers: '3,99'}", "exits.exit_layers"),
    ("exits: {exit_layers: 'a,b'}", "exits.exit_layers"),
    ("hwsim: {arch: /no/such/arch.yaml}", "hwsim.arch"),
    ("hwsim: {space: /no/such/space.yaml}", "hwsim.space"),
    ("model: {name: ViT-Q-99}", "model.name"),
    ("model: {pretrained: /no/such.pt}", "model.pretrained"),
    ("runtime: {device: 'cuda:x'}", "runtime.device"),
    ("exits: {lr: .nan}", "exits.lr"),
    ("[1, 2]", "expected a mapping"),
])
def test_run_config_checked_before_any_stage(cli, tmp_path, yaml_text, needle):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml_text + "\n")
    line = cli("run", "--config", cfg, "--out", tmp_path / "o", needle=needle)
    assert str(cfg) in line


def test_run_model_override_and_stage_order(cli, tmp_path):
    cli("run", "--model", "no-such-model", "--out", tmp_path / "o", needle="model.name")
    cli("run", "--from", "hls", "--until", "model", "--out", tmp_path / "o", needle="comes after")
    cli("run", "--until", "nope", "--out", tmp_path / "o", needle="unknown stage")


def test_failed_stage_leaves_no_folder(tmp_path):
    from analysis.pipeline.config import RunConfig
    from analysis.pipeline.runner import Stage, run_pipeline
    from common.errors import InputError

    def ok(ctx):
        (ctx.dir("a") / "x.txt").write_text("x")
        return ["a/x.txt"]

    def boom(ctx):
        (ctx.dir("b") / "half.txt").write_text("partial")
        raise InputError("b: broken")

    stages = [Stage("a", (), lambda c: {}, ok, "a"), Stage("b", ("a",), lambda c: {}, boom, "b")]
    out = tmp_path / "new"
    with pytest.raises(InputError):
        run_pipeline(RunConfig(), out, [Stage("b", (), lambda c: {}, boom, "b")], log=lambda *a: None)
    assert not out.exists()  # the first stage failed: the new DIR is removed again
    with pytest.raises(InputError):
        run_pipeline(RunConfig(), out, stages, log=lambda *a: None)
    # a finished stage is kept for a resume; the failed stage's folder is gone
    assert (out / "a" / "x.txt").is_file() and not (out / "b").exists()


def test_run_until_model_prints_no_report_path(run_cli, tmp_path):
    rc, out, err = run_cli("run", "--until", "model", "--out", tmp_path / "r", "--no-progress")
    assert rc == 0, err
    assert "report:" not in out and "no report" in out
    assert not (tmp_path / "r" / "report").exists()


@pytest.mark.slow
def test_dse_unreachable_scheduler_leaves_no_out(cli, tmp_path, trace_files):
    sp = tmp_path / "space.yaml"
    sp.write_text("parameters: {array.rows: [8, 16]}\n")
    cli("dse", "--space", sp, "--trace", trace_files, "--scheduler", "tcp://127.0.0.1:9", "--out", tmp_path / "o",
        needle="--scheduler")


# ---- argparse usage errors -------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["eval"], ["eval", "--n", "x", "--out", "a.json"], ["sim", "--bogus"],
                                  ["dse", "--out", "o"], ["eval", "--batch-size", "0", "--out", "a.json"]])
def test_usage_errors_are_one_line(run_cli, argv):
    rc, _, err = run_cli(*argv)
    one_line_error(rc, err, argv[0])


def test_unknown_command_is_one_line(run_cli):
    rc, _, err = run_cli("frobnicate")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("lraee: error:")


# ---- third-party warnings (subprocess: they are printed at import) ---------------------------

def _lraee(*argv, env=None, cwd=None, timeout=300):
    e = dict(os.environ)
    e.pop("LRAEE_SHOW_WARNINGS", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "analysis.cli", *map(str, argv)], capture_output=True, text=True,
                          env=e, cwd=cwd or REPO, timeout=timeout)


@pytest.mark.slow  # two interpreter starts with torch and brevitas: about 25 s on 2 busy cores
def test_third_party_warnings_silenced_unless_asked(tmp_path):
    argv = ["eval", "--precision", "w8a8", "--calibration", tmp_path / "none.safetensors", "--out", tmp_path / "e.json"]
    quiet = _lraee(*argv)
    one_line_error(quiet.returncode, quiet.stderr, "eval")
    loud = _lraee(*argv, env={"LRAEE_SHOW_WARNINGS": "1"})
    assert loud.returncode == 2
    if len(loud.stderr.strip().splitlines()) == 1:
        pytest.skip("this environment's brevitas/torch print no import warnings")
    assert "fast_hadamard_transform" in loud.stderr or "No CUDA runtime" in loud.stderr
    assert not list(tmp_path.iterdir())


# ---- the walk: every command of `lraee --help`, a few generic bad values ----------------------

_WALK = r"""
import contextlib, io, json, sys, traceback
from analysis.cli import main
res = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
        except BaseException:
            rc = "raised"
            traceback.print_exc(file=err)
    res.append({"argv": argv, "rc": rc, "stderr": err.getvalue()})
print(json.dumps(res))
"""

_INPUT_HINTS = ("FILE", "DIR", "PATH", ".json", ".yaml", ".csv", ".cfg", "JSON", "YAML", "CSV", "run.yaml")


def _commands():
    import argparse

    from analysis.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _options(parser):
    """(output flags, input-file flags, required flags) of one command's parser."""
    outs, ins, req = [], [], []
    for a in parser._actions:
        if not a.option_strings or a.nargs == 0:
            continue
        flag = a.option_strings[-1]
        is_out = a.dest == "out" or a.dest.startswith("write") or flag.startswith("--out")
        hint = f"{a.metavar or ''} {a.help or ''}"
        is_in = not is_out and (a.type is Path or getattr(a.type, "__name__", "") == "_path_arg"
                                or any(h in (a.metavar or "") for h in _INPUT_HINTS)
                                or a.dest in ("config", "templates", "arch", "trace", "space", "policy", "policies",
                                              "spec", "geometry", "topology", "scalesim_cfg", "pretrained"))
        del hint
        (outs if is_out else ins if is_in else []).append(a)
        if a.required and not is_out and not is_in:
            req.append(a)
    return outs, ins, req


def _walk_cases(tmp: Path):
    afile = tmp / "afile"
    afile.write_text("x")
    bad = tmp / "bad.bin"
    bad.write_bytes(NOT_UTF8)
    cases = []
    for name, p in _commands().items():
        outs, ins, req = _options(p)
        base = []
        for a in req:  # required values that are neither inputs nor outputs: a valid-looking word
            base += [a.option_strings[-1], "x"]
        for kind in ("missing", "not_utf8", "out_under_file"):
            argv = [name, *base]
            for a in ins:
                argv += [a.option_strings[-1], str(tmp / "missing" / "nope.yaml") if kind == "missing" else str(bad)]
            for a in outs:
                m = re.search(r"(\.\w+)$", str(a.metavar or ""))  # FILE.json: the suffix the command wants
                leaf = f"{'sub' if kind == 'out_under_file' else f'new_{name}_{kind}'}{m.group(1) if m else ''}"
                argv += [a.option_strings[-1], str((afile if kind == "out_under_file" else tmp) / leaf)]
            if not ins and kind != "out_under_file" or not ins and not outs:
                argv += ["--no-such-flag"]  # nothing to make bad: an unknown flag (argparse, one line)
            cases.append(argv)
    return cases


@pytest.mark.slow  # one interpreter, every command x 3 cases: about 25 s on 2 busy cores
def test_walk_every_command_with_bad_values(tmp_path):
    names = list(_commands())
    help_out = _lraee("--help").stdout
    assert all(n in help_out for n in names)
    cases = _walk_cases(tmp_path)
    before = tree(tmp_path)
    r = subprocess.run([sys.executable, "-c", _WALK, json.dumps(cases)], capture_output=True, text=True,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    bad = []
    for res in results:
        lines = [ln for ln in res["stderr"].splitlines() if ln.strip()]
        if res["rc"] != 2 or len(lines) != 1 or "Traceback" in res["stderr"] or \
                not lines[0].startswith(f"lraee {res['argv'][0]}: error: "):
            bad.append(f"{' '.join(res['argv'])}\n  -> rc {res['rc']}: {res['stderr'][-600:]}")
    assert not bad, "\n".join(bad)
    assert tree(tmp_path) == before, f"left behind: {sorted(tree(tmp_path) - before)}"
    assert {c[0] for c in cases} == set(names)


def test_common_stays_the_torch_free_ground_floor():
    """common/ (readers included) imports none of the project's other packages and no torch stack."""
    import ast

    forbidden = {"quant", "exitlogic", "hls", "hwsim", "analysis", "rtl", "torch", "torchvision", "brevitas",
                 "open_clip", "hls4ml", "qonnx"}
    for f in (REPO / "common").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for n in names:
                assert n.split(".")[0] not in forbidden, f"{f.name} imports {n}"


def test_classnames_not_utf8(cli, tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / c / "x.png")
    bad = tmp_path / "names.json"
    bad.write_bytes(b'["\xff", "b"]')
    cli("eval", "--data", f"folder:{root}", "--classnames", bad, "--out", tmp_path / "o" / "e.json",
        needle="not UTF-8")
