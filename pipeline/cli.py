"""themeshift command line: thin commands over pipeline.runner."""

from __future__ import annotations

import csv
import inspect
import json
import os
import sys
import time
import warnings
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text
from typer import rich_utils
from typer.core import TyperOption

from pipeline.config import load_config, load_config_with_origins, settings_text
from pipeline.embed import load_encoder
from pipeline.errors import ConfigError, EnvironmentFault, InputError, environment_fault, printable
from pipeline.findings import findings_lines, run_findings
from pipeline.framework import load_framework
from pipeline.io.human_codes import read_human_codes, read_mapping
from pipeline.io.metadata import read_speakers
from pipeline.io.rundir import read_table
from pipeline.models import build_fast, registry, resolve
from pipeline.ray_engine import configured_session, require_ray
from pipeline.runner import (
    PSEUDONYMISED_INPUT,
    framework_for,
    run_anonymise,
    run_codes,
    run_compare,
    run_embed,
    run_export_qdpx,
    run_learn,
    run_map,
    run_report,
    run_segment,
    run_shift,
    run_suggest,
    run_transform,
)
from pipeline.settings import InputSettings, ScaleSettings, SpeakersSettings, settings_for
from pipeline.stages import STAGES, describe, graph, stage
from pipeline.study_init import draft_study, refuse_overwrite, summary, write_draft

app = typer.Typer(
    help=(
        "Find themes in interview transcripts, map them onto a framework and score how each "
        "speaker's thinking shifted between interview waves. Everything runs offline.\n\n"
        "Example: themeshift run examples/kt_study --out runs/demo"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)


def _readable_help() -> None:
    """Two fixes to typer's help: version 0.29 labels every boolean flag `<bool>`, as if it took a value
    (and `--learn true` then fails), so a flag shows no type; and a word longer than its column (a
    path) is folded onto the next line, never cut off with an ellipsis."""
    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    make = getattr(rich_utils, "_make_rich_text", None)
    if make is not None:

        def folded(*args, **kwargs):
            text = make(*args, **kwargs)
            if isinstance(text, Text):
                text.overflow = "fold"
            return text

        rich_utils._make_rich_text = folded


_readable_help()
_LOG_JSON: dict = {"on": False, "command": None}


@app.callback()
def _main(
    ctx: typer.Context,
    log_json: Annotated[
        bool,
        typer.Option(
            "--log-json",
            help="Machine-readable log: one JSON object per line on stderr (progress, warning, "
            "error, done) instead of progress bars and summaries. Put it before the command: "
            "themeshift --log-json run ...",
        ),
    ] = False,
) -> None:
    _LOG_JSON.update(on=log_json, command=ctx.invoked_subcommand)
    err.quiet = log_json  # the human-readable lines give way to the JSON ones


_STAGE_COMMANDS: dict[str, tuple] = {}  # stage -> (function, command name, typer app); registered in stage order


def _stage_command(name: str, command: str | None = None, on=None):
    """Declare a stage's command: its help is the function's docstring, then what the stage reads and
    writes, from the stage table (pipeline.stages); `_register_stage_commands` adds them in pipeline order."""

    def declare(fn):
        first, _, rest = help_text(fn).partition("\n\n")
        text = f"{first}\n\n{describe(stage(name))}" + (f"\n\n{rest}" if rest else "")
        _STAGE_COMMANDS[name] = (fn, command or name, on, text)
        return fn

    return declare


def help_text(fn) -> str:
    """A command's docstring as help: each paragraph one line, so the terminal wraps it at its own width."""
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(fn.__doc__ or "").split("\n\n"))


def _command(name: str | None = None):
    """Register a command that is not a stage (run, stages), its help from help_text."""

    def register(fn):
        return app.command(name, help=help_text(fn))(fn)

    return register


def _register_stage_commands() -> None:
    for s in STAGES:
        if s.name in _STAGE_COMMANDS:
            fn, command, on, text = _STAGE_COMMANDS[s.name]
            (on or app).command(command, help=text)(fn)


def _log(event: str, **fields) -> None:
    """One JSON log line on stderr (with --log-json)."""
    if _LOG_JSON["on"]:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **fields}
        sys.stderr.write(json.dumps(line, default=str) + "\n")
        sys.stderr.flush()


ConfigOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--config", "-c", help="TOML file overriding any default setting (see them with themeshift config show)."
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries.")]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Skip unreadable files; list them in rejected.parquet.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run directory for the output tables.")]
CopyOutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for the pseudonymised copy of the study.")]
InputArg = Annotated[
    Path,
    typer.Argument(
        help="Folder of transcripts (.txt .md .docx .vtt .srt .json .pdf), field notes and documents, read recursively."
    ),
]


@contextmanager
def _reporting(quiet: bool, run_dir: Optional[Path] = None):
    """Every failure ends in one 'error:' line on stderr, never a traceback: bad input exits 2,
    the environment (permissions, full or read-only disk) 3, Ctrl-C 130, and anything unforeseen 1
    with the full traceback written to a log file (in run_dir when the command has one)."""
    command = _LOG_JSON.get("command")

    def show_warning(message, category, filename, lineno, file=None, line=None):
        _log("warning", command=command, message=str(message))
        if not quiet:
            err.print("[yellow]warning:[/] " + _escape(printable(str(message))), highlight=False)

    def fail(code: int, message: str, **fields) -> None:
        _log("error", command=command, message=message, **fields)
        err.print("[red]error:[/] " + _escape(printable(message)), highlight=False)
        raise typer.Exit(code)

    old = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        yield
    except typer.Exit:
        raise
    except InputError as exc:
        fail(2, str(exc), file=exc.path, line=exc.line)
    except EnvironmentFault as exc:
        fail(3, str(exc), file=exc.path)
    except OSError as exc:  # raised below the stages' own checks: name the path, no traceback
        env = environment_fault(exc)
        fail(3, str(env), file=env.path)
    except KeyboardInterrupt:
        fail(130, "interrupted; tables already written are complete, the stage that was running left none")
    except (RecursionError, MemoryError) as exc:
        fail(2, f"input too deeply nested or too large to process ({type(exc).__name__})")
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        log = _crash_log(run_dir)
        fail(1, f"unexpected {type(exc).__name__}: {exc}; please report it with the traceback in {log}")
    else:
        _log("done", command=command)
    finally:
        warnings.showwarning = old


def _escape(text: str) -> str:
    """File names and messages print literally: '[draft] P05.txt' is not rich markup."""
    from rich.markup import escape

    return escape(text)


def _crash_log(run_dir: Optional[Path]) -> Path:
    import tempfile
    import traceback

    text = traceback.format_exc()
    # the run folder, else the folder the user is in (where they will look), else the temp folder
    for folder in ([Path(run_dir)] if run_dir is not None else []) + [Path.cwd(), Path(tempfile.gettempdir())]:
        try:
            if folder.is_dir():
                path = folder / f"themeshift-error-{time.strftime('%Y%m%d-%H%M%S')}.log"
                path.write_text(text, encoding="utf-8")
                return path
        except OSError:
            continue
    return Path("(no writable folder for the log)")


@contextmanager
def _progress(quiet: bool):
    if _LOG_JSON["on"]:

        def log_progress(what: str, done: int, total: int) -> None:
            _log("progress", stage=what.split(" ", 1)[0], what=what, done=done, total=total)

        yield log_progress
        return
    if quiet or not sys.stderr.isatty() and os.environ.get("THEMESHIFT_PROGRESS") != "1":
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def update(what: str, done: int, total: int) -> None:
            stage = what.split(" ", 1)[0]
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total, description=what[:60])

        yield update


ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Embedding model: minilm (default), fast, or the folder of a local model (sentence transformers).",
    ),
]
RunArg = Annotated[Path, typer.Argument(help="Run directory made by `themeshift run` or `themeshift segment`.")]


def _check_inputs(
    cfg: dict,
    framework: Optional[Path],
    human: Optional[Path],
    mapping: Optional[Path],
    input_dir: Optional[Path] = None,
) -> None:
    """Read and validate every input file a run will need, and the embedding model, before its first stage."""
    resolve(cfg["embed"]["model"])  # an unknown --model is one line before segment writes anything
    fw = load_framework(framework or cfg["map"]["framework"] or None)
    if fw.role_lines and input_dir is not None and Path(input_dir).is_dir():
        speakers = Path(input_dir) / cfg["input"]["speakers_file"]
        fw.check_roles({s.role for s in read_speakers(speakers).values()} if speakers.is_file() else set())
    if human is not None:
        read_human_codes(human, cfg["compare"]["qdpx_max_members"], cfg["compare"]["qdpx_max_bytes"])
    if mapping is not None:
        read_mapping(mapping, fw)
    if input_dir is not None and Path(input_dir).is_dir():
        _check_group_by(cfg["shift"]["group_by"], Path(input_dir), cfg["input"])


def _check_group_by(group_by: str, input_dir: Path, inp: dict) -> None:
    """shift.group_by names speaker_role or a column of speakers.csv or manifest.csv: a typo is one line
    before segment, not an error after an hour of embedding."""
    if group_by == "speaker_role":
        return
    columns = {"wave", "date", "participant_id", "source_type"}
    for name in (inp["speakers_file"], inp["manifest_file"]):
        path = input_dir / name
        if path.is_file():
            with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
                columns |= {c.strip() for c in next(csv.reader(fh), [])}
    columns.discard("role")  # speakers.csv's role is speaker_role in the tables
    if group_by not in columns:
        known = sorted(columns - {"file", "speaker_id", "interview_id", "is_interviewer", "aliases", "name"})
        raise ConfigError(
            f"shift.group_by: no column {group_by!r} in speakers.csv or manifest.csv (known: "
            f"speaker_role, {', '.join(known)})"
        )


def _check_files(
    cfg: dict, run_dir: Path, framework: Optional[Path], human: Optional[Path] = None, mapping: Optional[Path] = None
) -> None:
    """A stage's own input files (framework, human codes, mapping) are read and checked before its
    tables: a bad file is the error to fix first."""
    fw = framework_for(run_dir, cfg["map"]["framework"], framework)
    if human is not None:
        read_human_codes(human, cfg["compare"]["qdpx_max_members"], cfg["compare"]["qdpx_max_bytes"])
    if mapping is not None:
        read_mapping(mapping, fw)


def _config(
    config: Optional[Path],
    skip_bad: bool = False,
    model: Optional[str] = None,
    engine: Optional[str] = None,
    address: Optional[str] = None,
    study: Optional[str] = None,
):
    """The configuration, with the command's options as its last layer; never changed after this."""
    overrides: dict = {}
    if study:
        overrides["anonymise"] = {"study": study}
    if skip_bad:
        overrides["run"] = {"skip_bad": True}
    if model:
        overrides["embed"] = {"model": model}
    scale = {k: v for k, v in (("engine", engine), ("address", address)) if v is not None}
    if scale:
        overrides["scale"] = scale
    cfg = load_config(config, overrides or None)
    if cfg["scale"]["engine"] == "ray":
        require_ray()  # one line naming the extra, before any stage starts
    elif address is not None:
        raise InputError("--address goes with --engine ray")
    return cfg


def _summary(quiet: bool, record: dict, run_dir: Path) -> None:
    if quiet:
        return
    c = record["counts"]
    excluded = ", ".join(f"{n} {why}" for why, n in c["excluded"].items()) or "none"
    err.print(
        f"{c['files_read']} files, {c['turns']} turns -> {c['utterances']} utterances "
        f"({c['coded']} coded; not coded: {excluded}); {c['files_rejected']} files rejected"
    )
    err.print(f"tables in {run_dir}/")


EngineOpt = Annotated[
    Optional[str],
    typer.Option(
        "--engine",
        help="local (default) or ray: segment and embed as Ray jobs, utterances/ and embeddings/ "
        "as folders of part files, and codes fitted on more than codes.fit_sample utterances "
        "assigned to the rest in parallel (needs Ray: install themeshift with its scale extra).",
    ),
]
AddressOpt = Annotated[
    Optional[str],
    typer.Option(
        "--address",
        help="With --engine ray: the Ray cluster to join (e.g. auto, or HOST:6379); without it Ray "
        "starts on this machine.",
    ),
]


@_stage_command("segment")
def segment(
    input_dir: InputArg,
    out: OutOpt,
    config: ConfigOpt = None,
    skip_bad: SkipBadOpt = False,
    engine: EngineOpt = None,
    address: AddressOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Split transcripts into utterances.

    Reads manifest.csv and speakers.csv from the folder when present.

    Example: themeshift segment interviews/ --out runs/study1
    """

    with _reporting(quiet, out):
        cfg = _config(config, skip_bad, engine=engine, address=address)
        with _progress(quiet) as update:
            record = run_segment(input_dir, out, cfg, update)
        _summary(quiet, record, out)


@_stage_command("embed")
def embed(
    run_dir: RunArg,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    engine: EngineOpt = None,
    address: AddressOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Embed the coded utterances, reusing cached vectors.

    Example: themeshift embed runs/study1 --model fast
    """

    with _reporting(quiet, run_dir):
        cfg = _config(config, model=model, engine=engine, address=address)
        with _progress(quiet) as update:
            rec = run_embed(run_dir, cfg, update)
        if not quiet and rec["engine"] == "ray":
            err.print(
                f"embedded {rec['embedded']} new texts, {rec['cache_hits']} from cache in "
                f"{rec['parts_embedded']} parts ({rec['parts_reused']} already done) with {rec['model']}"
            )
        elif not quiet:
            err.print(
                f"embedded {rec['embedded']} new texts, {rec['cache_hits']} from cache "
                f"({rec['coded']} coded utterances, {rec['distinct_texts']} distinct) with {rec['model']}"
            )


@_stage_command("codes")
def codes(
    run_dir: RunArg,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    engine: EngineOpt = None,
    address: AddressOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Cluster embedded utterances into candidate first-order codes.

    Above codes.fit_sample utterances (default 200,000) the codes are fitted on a stratified sample and
    every other utterance joins its nearest code.

    Example: themeshift codes runs/study1
    """

    with _reporting(quiet, run_dir):
        cfg = _config(config, model=model, engine=engine, address=address)
        with _progress(quiet) as update:
            rec = run_codes(run_dir, cfg, update)
        if not quiet:
            c = rec["counts"]
            sample = f", fitted on a sample of {rec['fitted_on']:,}" if rec.get("sampled") else ""
            err.print(
                f"{c['codes']} codes ({rec['method']}, min cluster size {rec['min_cluster_size']}{sample}); "
                f"{c['unassigned']} of {c['assigned'] + c['unassigned']} utterances unassigned"
            )


FrameworkOpt = Annotated[
    Optional[Path],
    typer.Option("--framework", "-f", help="Framework YAML (default: knowledge translation push, pull and exchange)."),
]
OverridesOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--overrides", help="CSV/YAML of code fingerprint -> concept (or 'unmapped'); default: overrides.csv in RUN."
    ),
]


@_stage_command("map")
def map_(
    run_dir: RunArg,
    framework: FrameworkOpt = None,
    overrides: OverridesOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Map codes onto a framework's concepts and dimensions.

    Example: themeshift map runs/study1 --framework my_codebook.yaml --overrides my_overrides.csv
    """

    with _reporting(quiet, run_dir):
        cfg = _config(config)
        _check_files(cfg, run_dir, framework)
        with _progress(quiet) as update:
            rec = run_map(run_dir, cfg, framework, overrides, update)
        if not quiet:
            c = rec["counts"]
            by_dim = ", ".join(f"{n} {d}" for d, n in c["utterances_by_dimension"].items())
            err.print(
                f"{c['codes_mapped']} of {c['codes']} codes mapped ({c['codes_overridden']} by override), "
                f"{c['codes_unmapped']} unmapped; utterances: {by_dim}, "
                f"{c['utterances'] - c['utterances_mapped']} unmapped"
            )
            err.print(f"data structure: {run_dir}/data_structure.md")


@_stage_command("shift")
def shift(run_dir: RunArg, config: ConfigOpt = None, quiet: QuietOpt = False) -> None:
    """Score each group's and each speaker's shift between interview waves.

    Example: themeshift shift runs/study1
    """

    with _reporting(quiet, run_dir):
        cfg = _config(config)
        with _progress(quiet) as update:
            rec = run_shift(run_dir, cfg, update)
        if not quiet:
            c = rec["counts"]
            other = ", ".join(f"{n} {s}" for s, n in c["status"].items() if s != "ok") or "none"
            for line in rec["findings"]:
                err.print(line, markup=False, highlight=False)
            err.print(
                f"{c['speakers']} speakers, {c['status'].get('ok', 0)} wave pairs scored "
                f"({c['significant']} significant shifts, {c['significant_fdr']} at q < alpha; "
                f"not scored or flagged: {other}); tables in {run_dir}/"
            )


@_stage_command("transform")
def transform(
    fitted_run: Annotated[Path, typer.Argument(help="A run whose codes to reuse.")],
    input_dir: InputArg,
    out: OutOpt,
    config: ConfigOpt = None,
    skip_bad: SkipBadOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Assign an earlier run's codes to new transcripts (segment, embed, nearest code), and code them with
    its learned model when `themeshift learn` made one.

    Example: themeshift transform runs/study1 new_interviews/ --out runs/study1-new
    """

    with _reporting(quiet, out):
        cfg = _config(config, skip_bad)
        with _progress(quiet) as update:
            rec = run_transform(fitted_run, input_dir, out, cfg, update)
        if not quiet:
            c = rec["counts"]
            err.print(f"{c['assigned']} utterances took an existing code, {c['unassigned']} matched none")
            if rec.get("learned"):
                lr = rec["learned"]
                err.print(
                    f"coded {lr['counts']['utterances']} utterances with the learned model ({lr['level']} codes, "
                    f"{lr['encoder']} encoder): utterance_dimensions.parquet, learned_codes.parquet"
                )


models_app = typer.Typer(help="List the embedding models and build the fast one.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """Show the known embedding models and whether each is available here."""

    for name, entry in registry().items():
        try:
            where = str(resolve(name).path)
        except InputError:
            where = f"not available: {entry['install']}"
        typer.echo(f"{name:8} {entry['description']}\n         {where}")


@models_app.command("build")
def models_build(name: Annotated[str, typer.Argument(help="Model to build: fast.")] = "fast") -> None:
    """Distil the fast static model from minilm, offline (about a minute).

    Example: themeshift models build fast && themeshift run interviews/ --out runs/quick --model fast
    """

    with _reporting(False):
        if name != "fast":
            raise InputError(f"only 'fast' can be built, not {name!r}")
        err.print(f"built {build_fast()}")


HumanOpt = Annotated[
    Path,
    typer.Option(
        "--human", help="Human codes: CSV/Parquet spans or per-utterance codes, or a REFI-QDA project (.qdpx)."
    ),
]
MappingOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--mapping", help="CSV mapping human code names to the framework: human_code, concept and/or dimension."
    ),
]


@_stage_command("compare")
def compare(
    run_dir: RunArg,
    human: HumanOpt,
    mapping: MappingOpt = None,
    framework: FrameworkOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Compare the machine's codes with human coders.

    Cohen's kappa per coder pair, Krippendorff's alpha with and without the machine, precision/recall/F1
    per dimension, cluster-vs-human-code alignment; bootstrap intervals.

    Example: themeshift compare runs/demo --human examples/answer_key/human_codes.csv
    """

    with _reporting(quiet, run_dir):
        cfg = _config(config)
        _check_files(cfg, run_dir, framework, human, mapping)
        rec = run_compare(run_dir, human, cfg, mapping, framework)
        if not quiet:
            c = rec["counts"]
            by_level = "; ".join(f"{n} at the {lv} level" for lv, n in c["disagreeing_utterances_by_level"].items())
            err.print(
                f"{c['units']} coded utterances in {c['interviews']} interviews, coders: "
                f"{', '.join(c['coders'])} + {cfg['compare']['machine_name']}; utterances where the machine "
                f"differs from a coder: {by_level or 'none'}; tables in {run_dir}/"
            )

            a = read_table(run_dir, "agreement").to_pandas()
            # every level the codes were given at, finest first (a dimension-only kappa can hide that the
            # dimensions are just speaker roles)
            order = {"code": 0, "second-order": 1, "dimension": 2}
            main = a[a["metric"].isin(["cohen_kappa", "krippendorff_alpha"]) & (a["n"] > 0)]
            main = main.sort_values("level", key=lambda lv: lv.map(order), kind="stable")
            for r in main.itertuples():
                who = r.coder_a if not isinstance(r.coder_b, str) else f"{r.coder_a} vs {r.coder_b}"
                ci = "" if r.ci_low != r.ci_low else f" [{r.ci_low:.2f}, {r.ci_high:.2f}]"  # NaN: no interval
                err.print(f"  {r.metric} ({r.level}) {who}: {r.value:.3f}{ci} (n={r.n})", highlight=False)


export_app = typer.Typer(help="Export a run for other tools.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@_stage_command("export", "qdpx", on=export_app)
def export_qdpx(
    run_dir: RunArg,
    out: Annotated[Path, typer.Argument(help="The .qdpx file to write.")],
    framework: FrameworkOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write the sources and the machine's coding as a REFI-QDA project (NVivo, ATLAS.ti, MAXQDA, QualCoder).

    Codebook: dimension > second-order concept > first-order code; codings at exact character positions.

    Example: themeshift export qdpx runs/demo runs/demo/demo.qdpx
    """

    with _reporting(quiet, run_dir):
        cfg = _config(config)
        _check_files(cfg, run_dir, framework)
        rec = run_export_qdpx(run_dir, out, cfg, framework)
        if not quiet:
            c = rec["counts"]
            err.print(
                f"{c['sources']} sources, {c['selections']} coded utterances "
                f"({c['concept_codings']} concept and {c['first_order_codings']} first-order codings, "
                f"{c['first_order_codes']} first-order codes) -> {rec['path']}"
            )


@_stage_command("report")
def report(
    run_dir: RunArg,
    figures: Annotated[
        Optional[Path],
        typer.Option("--figures", help="Also write each figure as SVG (with its numbers as CSV) into this folder."),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Where to write the page (default: RUN/report.html).")
    ] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write [bold]report.html[/]: one self-contained page (no network, email it) with the corpus, the data
    structure, dimension shares, per-speaker shifts, a map of utterances, agreement and the manifest.

    Sections whose tables are missing name the command that makes them.

    Example: themeshift report runs/demo --figures runs/demo/figures
    """

    with _reporting(quiet, run_dir):
        cfg = _config(config)
        with _progress(quiet) as update:
            rec = run_report(run_dir, cfg, figures, out, update)
        if not quiet:
            for table, command in rec["missing"].items():
                err.print(f"[yellow]missing:[/] {table}.parquet (run `{command}`)", highlight=False)
            err.print(
                f"report: {rec['path']} ({rec['bytes'] / 1024:.0f} KB, {len(rec['sections'])} sections)"
                + (f"; {len(rec['figure_files'])} figure files in {figures}/" if figures else "")
            )


LevelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--level",
        help="What the model learns: dimension, second_order or code "
        "(default: the config's learn.level, second_order).",
    ),
]


@_stage_command("learn")
def learn(
    run_dir: RunArg,
    human: HumanOpt,
    mapping: MappingOpt = None,
    level: LevelOpt = None,
    framework: FrameworkOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Learn from the researchers' own coding and code every other utterance (utterance_dimensions gets
    source human / learned).

    Cross-validated by interview: machine-vs-coder kappa and alpha next to the coders' own agreement, a
    learning curve, and the gain over the framework-similarity mapping (kept as
    utterance_dimensions_framework.parquet).

    Example: themeshift learn runs/demo --human examples/answer_key/human_codes.csv
    """

    with _reporting(quiet, run_dir):
        cfg = _config(config)
        _check_files(cfg, run_dir, framework, human, mapping)
        with _progress(quiet) as update:
            rec = run_learn(run_dir, human, cfg, mapping, framework, level, update)
        if not quiet:
            c = rec["counts"]
            scores = ", ".join(f"{fs} {k:.3f}" for fs, k in c["cv_score_by_feature_set"].items())
            err.print(
                f"learned {rec['level']} codes from {c['labelled_units']} hand-coded utterances in "
                f"{c['interviews']} interviews ({', '.join(c['coders'])}) + {c['weak_examples']} framework "
                f"examples; cross-validated {c.get('selection_metric', 'machine-coder kappa')} by feature set: "
                f"{scores}; kept {rec['feature_set']}"
            )
            err.print(f"encoder: {c['encoder']} ({c['encoder_reason']})", highlight=False)
            by_source = ", ".join(f"{n} {s}" for s, n in c["utterances_by_source"].items())
            err.print(f"utterances: {by_source}; tables in {run_dir}/")

            e = read_table(run_dir, "learn_eval").to_pandas()
            order = {"code": 0, "second-order": 1, "dimension": 2}  # the level learned first, then coarser
            shown = (e["metric"] == "cohen_kappa") | (
                c.get("multi_code", False) & (e["metric"] == "f1") & (e["dimension"] == "micro")
            )
            rows = e[shown & e["evaluation"].isin(["cross-validation", "framework-similarity"])]
            rows = rows.sort_values("level", key=lambda lv: lv.map(order), kind="stable")
            for r in rows.itertuples():
                ci = "" if r.ci_low != r.ci_low else f" [{r.ci_low:.2f}, {r.ci_high:.2f}]"
                what = "kappa" if r.metric == "cohen_kappa" else "micro-F1 of code sets"
                err.print(
                    f"  {r.evaluation:20} {what} ({r.level}) {r.coder_a} vs {r.coder_b}: {r.value:.3f}{ci} (n={r.n})",
                    highlight=False,
                )


@_stage_command("suggest")
def suggest(
    run_dir: RunArg,
    n: Annotated[
        Optional[int], typer.Option("--n", help="How many to suggest (default: the config's learn.suggest_n, 50).")
    ] = None,
    unit: Annotated[str, typer.Option("--unit", help="utterance or interview.")] = "utterance",
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out", "-o", help="CSV to write (a .qdpx goes next to it); default RUN/suggestions_<unit>s.csv."
        ),
    ] = None,
    framework: FrameworkOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """List the utterances (or interviews) whose hand-coding would help the model most, as CSV and as a
    REFI-QDA project to open in NVivo, ATLAS.ti, MAXQDA or QualCoder.

    Ranks by the learned model's uncertainty (the framework mapping's before `learn`); under a role-aware
    framework each speaker role's model gets an equal share. [learn] suggest_diversity adds novelty.

    Example: themeshift suggest runs/demo --n 50
    """

    with _reporting(quiet, run_dir):
        cfg = _config(config)
        rec = run_suggest(run_dir, cfg, n, unit, out, framework)
        if not quiet:
            err.print(
                f"{rec['suggested']} {unit}s suggested (uncertainty from {rec['source']}; "
                f"{len(rec['excluded_hand_coded_interviews'])} hand-coded interviews left out) -> "
                f"{', '.join(rec['outputs'])}"
            )


KeyOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--key",
        help="The study's pseudonym key (JSON; made when missing, extended when given). Default: beside the "
        "output folder, named after it. Keep it apart from the data; it holds the real names.",
    ),
]
NamesOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--names", help="Further names and places to replace: CSV name,kind (person, place, org) or one name a line."
    ),
]
ReviewOpt = Annotated[
    bool,
    typer.Option("--review", help="Also write every replacement with its context (a CSV beside the key)."),
]
DecisionsOpt = Annotated[
    Optional[Path],
    typer.Option("--decisions", help="A review table with decision set to reject on texts to keep; stored in the key."),
]


def _anonymise_summary(quiet: bool, rec: dict) -> None:
    if quiet:
        return
    c = rec["counts"]
    kinds = ", ".join(f"{n} {k}" for k, n in c["by_kind"].items()) or "nothing"
    err.print(
        f"{rec['files']} files pseudonymised: {c['replacements']} replacements ({kinds}) of "
        f"{sum(c['entities'].values())} entities; {rec['units_per_second']} texts/s"
    )
    err.print(f"key (holds the real names, keep it apart): {rec['key']}", highlight=False)
    if rec.get("review_table"):
        err.print(f"review table: {rec['review_table']}", highlight=False)
    for r in rec["rejected"]:
        err.print(f"[yellow]skipped:[/] {r['source_file']}: {r['reason']}", highlight=False)


@_stage_command("anonymise")
def anonymise(
    input_dir: InputArg,
    out: CopyOutOpt,
    key: KeyOpt = None,
    names: NamesOpt = None,
    review: ReviewOpt = False,
    decisions: DecisionsOpt = None,
    study: Annotated[
        Optional[str],
        typer.Option(
            "--study",
            help="The study the key belongs to (default: the config's anonymise.study, else the input folder's name).",
        ),
    ] = None,
    config: ConfigOpt = None,
    skip_bad: SkipBadOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pseudonymise a study folder: names, places, organisations, NHS numbers, phone numbers, e-mails and
    dates of birth become [PERSON-07], [PLACE-03], ... consistently across the study. Files keep their
    formats (a PDF becomes text with its page breaks); manifest.csv and speakers.csv follow.

    Example: themeshift anonymise interviews/ --out interviews_pseudonymised --review
    """

    with _reporting(quiet, None):
        cfg = _config(config, skip_bad, study=study)
        with _progress(quiet) as update:
            rec = run_anonymise(input_dir, out, cfg, key, names, review, decisions, update)
        _anonymise_summary(quiet, rec)


class StopAfter(str, Enum):
    """Stages `run --until` can stop after."""

    segment = "segment"
    embed = "embed"
    codes = "codes"
    map = "map"


@contextmanager
def _engine_session(scale: ScaleSettings):
    """With the Ray engine, one Ray session (a local cluster started once) for every stage of the run."""
    if scale.engine != "ray":
        yield
        return

    with configured_session(scale):
        yield


@_command("init")
def init(
    input_dir: Annotated[Path, typer.Argument(help="The folder of transcripts to describe.")],
    waves: Annotated[
        Optional[str],
        typer.Option(
            "--waves",
            help="File-name pattern that holds the wave, e.g. '{speaker}_time{wave}' "
            "({speaker}, {wave}, {interview_id}, {any}); without it, wave folders (wave1/, T2/), "
            "wave words in names (C01_wave2, sarah_time1) and dates in names are tried.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing manifest.csv and speakers.csv.")
    ] = False,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Draft manifest.csv and speakers.csv for a folder of transcripts: which interview is which wave and
    who is speaking, inferred from folder and file names and the speaker labels inside.

    It prints what it inferred and what you must check; open both files, correct them, then run
    themeshift run DIR --out RUN. Existing files are kept unless --force.

    Example: themeshift init interviews/ --waves '{speaker}_time{wave}'
    """
    with _reporting(quiet):
        cfg = _config(config)
        inp, spk = settings_for(InputSettings, cfg), settings_for(SpeakersSettings, cfg)
        refuse_overwrite([input_dir / inp.manifest_file, input_dir / inp.speakers_file], force)
        draft = draft_study(input_dir, inp, spk, waves)
        written = write_draft(draft, inp.manifest_file, inp.speakers_file, force)
        _log("init", files=len(draft.files), checks=draft.checks, written=[str(p) for p in written])
        if not quiet:
            for line in summary(draft):
                err.print(line, markup=False, highlight=False)
            for line in draft.checks:
                err.print(f"check: {line}", markup=False, highlight=False)
            err.print(f"wrote {', '.join(str(p) for p in written)}", markup=False, highlight=False)
            err.print(f"next: open both, correct them, then themeshift run {input_dir} --out RUN", markup=False)


@_command()
def run(
    input_dir: InputArg,
    out: OutOpt,
    config: ConfigOpt = None,
    model: ModelOpt = None,
    framework: FrameworkOpt = None,
    human: Annotated[
        Optional[Path], typer.Option("--human", help="Human codes (CSV, Parquet or .qdpx) to compare the machine with.")
    ] = None,
    mapping: MappingOpt = None,
    learn: Annotated[
        bool,
        typer.Option(
            "--learn/--no-learn",
            help="With --human: learn from the human codes and code the rest before shift and compare.",
        ),
    ] = False,
    until: Annotated[
        Optional[StopAfter],
        typer.Option(
            "--until",
            help="Stop after this stage (segment, embed, codes or map); later stages can be run "
            "on the run directory afterwards.",
        ),
    ] = None,
    anonymise: Annotated[
        bool,
        typer.Option(
            "--anonymise/--no-anonymise",
            help="Pseudonymise the input first (into a pseudonymised copy in the run folder); every table, the "
            "report and the export then hold pseudonyms only.",
        ),
    ] = False,
    key: KeyOpt = None,
    names: NamesOpt = None,
    review: ReviewOpt = False,
    decisions: DecisionsOpt = None,
    engine: EngineOpt = None,
    address: AddressOpt = None,
    skip_bad: SkipBadOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run every stage on a folder of transcripts: segment, embed, codes, map, (learn,) shift (and compare,
    with --human), then write report.html.

    Example: themeshift run examples/kt_study --out runs/demo

    Example: themeshift run interviews/ --out runs/first_look --until codes   (candidate codes only)

    Example: themeshift run interviews/ --out runs/study1 --human coding.qdpx --learn --framework my_codebook.yaml
    """

    with _reporting(quiet, out):
        cfg = _config(config, skip_bad, model, engine, address)
        _check_inputs(cfg, framework, human, mapping, input_dir)  # an hour of embedding must not end in a typo's error
        if not anonymise and (key or names or review or decisions):
            raise InputError("--key, --names, --review and --decisions go with --anonymise")
        with _progress(quiet) as update, _engine_session(settings_for(ScaleSettings, cfg)):
            if anonymise:
                rec = run_anonymise(
                    input_dir,
                    Path(out) / PSEUDONYMISED_INPUT,
                    cfg,
                    key,
                    names,
                    review,
                    decisions,
                    update,
                    run_dir=Path(out),
                )
                _anonymise_summary(quiet, rec)
                input_dir = Path(out) / PSEUDONYMISED_INPUT
            record = run_segment(input_dir, out, cfg, update)
            _summary(quiet, record, out)
            if until == "segment":
                return
            encoder = load_encoder(cfg["embed"]["model"], cfg["embed"]["device"])  # loads lazily, once
            run_embed(out, cfg, update, encoder=encoder)
            if until == "embed":
                return
            rec = run_codes(out, cfg, update, encoder=encoder)
            if until == "codes":
                if not quiet:
                    err.print(f"{rec['counts']['codes']} codes; tables and manifest.json in {out}/")
                return
            run_map(out, cfg, framework, None, update, encoder=encoder)
            if until == "map":
                return
            if learn:
                if human is None:
                    raise InputError("--learn needs --human FILE (the researchers' codes to learn from)")
                run_learn(out, human, cfg, mapping, framework, progress=update, encoder=encoder)
            run_shift(out, cfg, update, encoder=encoder)
            if human is not None:
                run_compare(out, human, cfg, mapping, framework)
            run_report(out, cfg, progress=update)
        found = run_findings(Path(out))  # what was found first, then where it is
        _log("findings", command="run", **found)
        if not quiet:
            for line in findings_lines(found):
                err.print(line, markup=False, highlight=False)
            err.print(f"tables, manifest.json and report.html in {out}/")


_register_stage_commands()

config_app = typer.Typer(help="Show the settings a command would use, and where each came from.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    config: ConfigOpt = None, model: ModelOpt = None, engine: EngineOpt = None, skip_bad: SkipBadOpt = False
) -> None:
    """Print every setting as TOML, each with its origin: default, file (--config) or option.

    The output loads back as a --config file. Example: themeshift config show --config my.toml --model fast
    """
    with _reporting(False):
        overrides: dict = {}
        if skip_bad:
            overrides["run"] = {"skip_bad": True}
        if model:
            overrides["embed"] = {"model": model}
        if engine:
            overrides["scale"] = {"engine": engine}
        cfg, origins = load_config_with_origins(config, overrides or None)
        typer.echo(settings_text(cfg, origins))


@_command("stages")
def stages_() -> None:
    """Print the stage graph: each stage, its command, the tables it reads and writes, and which stages
    read what it writes.

    Example: themeshift stages
    """
    typer.echo(graph())


if __name__ == "__main__":
    app()
