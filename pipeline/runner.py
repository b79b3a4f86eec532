"""The one runner: every stage declared in pipeline.stages runs through `execute`.

execute checks the stage's declared reads (each required table present, every table it reads current),
hands the stage body a Context to read them through, writes the tables the body returns atomically,
records their lineage from the declared reads (never from a hand-kept list), times the stage, emits
its warnings and keeps its manifest record. A body adapts one plain stage function (tables and
settings in, tables out) to the run directory. `run_<stage>` are the public entry points, one line each.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import ray_engine, schema
from pipeline.anonymise import anonymise_folder, default_key_path
from pipeline.codes import assign_new, fit_codes, save_topic_model, unassigned_count
from pipeline.codes_scale import (
    assign_all,
    merge_fitted,
    recount_codes,
    stratified_sample,
)
from pipeline.compare import compare as compare_codes
from pipeline.embed import embed_utterances, load_encoder, vectors
from pipeline.errors import InputError
from pipeline.framework import load_framework
from pipeline.ingest import discover, segment_corpus
from pipeline.io.formats import EXTENSIONS
from pipeline.io.human_codes import read_human_codes, read_mapping
from pipeline.io.qdpx import add_human_codings, machine_project, source_variables, speaker_cases, write_qdpx
from pipeline.io.rundir import (
    atomic_write,
    input_digests,
    iter_table,
    read_rows,
    read_table,
    record_lineage,
    remake_command,
    stage_record,
    stale_reason,
    table_num_rows,
    table_path,
    table_sha256,
    update_manifest,
    write_table,
)
from pipeline.io.vectors import StoredEmbeddings
from pipeline.learn import (
    apply_model,
    dimensions_for_compare,
    drop_suggestion_markers,
    learn_stage,
    learned_sets,
)
from pipeline.learn_finetune import load_tuned_encoder
from pipeline.learn_model import load_model, save_model
from pipeline.map import best_concept, map_stage, mapping_warnings
from pipeline.overrides import find_overrides, load_overrides, split_obsolete
from pipeline.questions import question_table
from pipeline.report import (
    build_report,
    load_tables,
    project_2d,
    write_figures,
    write_shareable,
)
from pipeline.settings import (
    AnonymiseSettings,
    CodesSettings,
    EmbedSettings,
    LearnSettings,
    section_values,
    settings_for,
)
from pipeline.shift import compute_shifts, missing_shift_reason
from pipeline.shift_groups import headline
from pipeline.stages import SHIFT, Stage, stage
from pipeline.suggest import suggest, write_suggestions
from pipeline.triangulate import source_themes

Progress = Callable[[str, int, int], None]  # (what, done, total)

PSEUDONYMISED_INPUT = "pseudonymised_input"  # run --anonymise: the pseudonymised copy the run reads


@dataclass
class Context:
    """What a stage body gets: its declared tables (read through here), settings and helpers."""

    stage: Stage
    run_dir: Path
    settings: Any  # the stage's own settings (Stage.settings), built once by execute
    progress: Progress | None = None
    encoder: Any = None

    def table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """A declared table (execute has checked that it is present and current)."""
        if name not in self.stage.reads + self.stage.optional:
            raise AssertionError(f"stage {self.stage.name} reads {name} without declaring it in pipeline.stages")
        return read_table(self.run_dir, name, check=False, columns=columns)

    def has(self, name: str) -> bool:
        return table_path(self.run_dir, name).exists()

    def optional(self, name: str, columns: list[str] | None = None) -> pa.Table | None:
        return self.table(name, columns) if self.has(name) else None

    def embedding_encoder(self):
        """The encoder that embedded the run, so new texts share its vector space."""
        return embedding_encoder(self.run_dir, self.settings.embed, self.encoder)


@dataclass
class Output:
    """What a stage body returns: its manifest record and the tables to write, in order."""

    record: dict
    tables: dict[str, pa.Table] = field(default_factory=dict)
    written: tuple[str, ...] = ()  # tables the body wrote itself (the Ray engine's part files)
    finish: Callable[[dict], None] | None = None  # completes the record once the tables are written


def check_inputs(s: Stage, run_dir: Path) -> dict[str, str]:
    """The digests of the tables the stage reads; a required one missing, or any one stale, is one
    line naming the command that remakes it. The report leaves stale tables out instead (and says so)."""
    for name in s.reads:
        if not table_path(run_dir, name).exists():
            if holds_transcripts(run_dir):
                raise InputError(
                    "a folder of transcripts, not a run directory: run `themeshift run "
                    f"{run_dir} --out RUN` first, then `{s.command}` on RUN",
                    run_dir,
                )
            raise InputError(f"missing {name}.parquet; run `{remake_command(name)}` first", run_dir)
    if s.refuses_stale:
        for name in s.reads + s.optional:
            if table_path(run_dir, name).exists() and (why := stale_reason(run_dir, name)):
                raise InputError(f"stale table: {why}; re-run `{remake_command(name)}`", table_path(run_dir, name))
    return input_digests(run_dir, s.reads + s.optional)


def holds_transcripts(folder: Path) -> bool:
    """A folder of transcripts rather than a run directory (no manifest.json, files of a format read here)."""
    if not folder.is_dir() or (folder / "manifest.json").is_file():
        return False
    files = itertools.islice((p for p in folder.rglob("*") if p.is_file()), 10_000)  # only on the error path
    return any(p.suffix.lower() in EXTENSIONS for p in files)


def execute(name: str, run_dir: Path, cfg: dict, progress: Progress | None = None, encoder=None, **args) -> dict:
    """Run one stage on a run directory: check, run, write, record. Returns its manifest record."""
    s = stage(name)
    run_dir = Path(run_dir)
    started = time.perf_counter()
    made_from = check_inputs(s, run_dir)
    settings = settings_for(s.settings, cfg) if s.settings else None
    out = BODIES[name](Context(s, run_dir, settings, progress, encoder), **args)
    undeclared = set(out.tables) - set(s.writes)
    if undeclared:
        raise AssertionError(f"stage {name} writes {sorted(undeclared)} without declaring it in pipeline.stages")
    for table_name, table in out.tables.items():
        write_table(run_dir, table_name, table)
    written = list(out.tables) + list(out.written)
    if written:
        record_lineage(run_dir, written, made_from)
    record = out.record
    if out.finish:
        out.finish(record)
    if "outputs" not in record and written:
        record["outputs"] = [f"{t}.parquet" for t in written] + list(s.files)
    record["seconds"] = round(time.perf_counter() - started, 3)
    for message in record.get("warnings", []):
        warnings.warn(message, stacklevel=2)
    if s.recorded:
        update_manifest(run_dir, name, record, cfg if s.config else None)
    return record


# ---- stage bodies -------------------------------------------------------------------------------


def _segment(ctx: Context, input_dir: Path) -> Output:
    s = ctx.settings
    exclude = (ctx.run_dir,)  # an --out inside the input folder is never read as input
    total = len(discover(Path(input_dir), s.input, exclude=exclude))
    done = 0

    def on_file(rel: str) -> None:
        nonlocal done
        done += 1
        if ctx.progress:
            ctx.progress(f"segment {rel}", done, max(total, done))

    written: tuple[str, ...] = ()
    if s.scale.engine == "ray":
        with ray_engine.configured_session(s.scale):
            corpus = ray_engine.segment_corpus(input_dir, s, on_file, exclude)
        ray_engine.write_sharded(ctx.run_dir, "utterances", corpus.utterances, s.scale.shard_rows)
        written = ("utterances",)  # as part files
    else:
        corpus = segment_corpus(input_dir, s, on_file, exclude)
    tables = {name: getattr(corpus, name) for name in ctx.stage.writes if name not in written}
    utt = corpus.utterances
    reasons = Counter(r for r in utt.column("exclusion_reason").to_pylist() if r is not None)
    counts = {
        "files_read": corpus.sources.num_rows,
        "files_rejected": corpus.rejected.num_rows,
        "turns": int(pc.sum(corpus.interviews.column("n_turns")).as_py()),
        "utterances": utt.num_rows,
        "coded": int(pc.sum(utt.column("coded")).as_py()),
        "excluded": dict(sorted(reasons.items())),
        "speakers": len(set(utt.column("speaker_id").to_pylist())),
    }
    assert counts["coded"] + sum(reasons.values()) == counts["utterances"]
    record = {
        "input_dir": str(Path(input_dir).resolve()),
        "inputs": corpus.inputs,
        "rejected": corpus.rejected.to_pylist(),
        "counts": counts,
        "warnings": corpus.warnings,
    }
    return Output(record, tables, written)


def _embed(ctx: Context) -> Output:
    e, run_dir = ctx.settings, ctx.run_dir
    ray = e.scale.engine == "ray"
    # The Ray engine's workers read the utterance parts themselves: here only what the check needs.
    utterances = ctx.table("utterances", columns=["coded", "exclusion_reason"] if ray else None)
    if not pc.any(utterances.column("coded")).as_py():
        reasons = Counter(r for r in utterances.column("exclusion_reason").to_pylist() if r)
        raise InputError(
            f"no utterance is left to code ({', '.join(f'{n} {r}' for r, n in reasons.most_common())}): "
            "are the participants' labels taken for interviewers? See speakers.csv and "
            "speakers.interviewer_labels",
            run_dir / "utterances.parquet",
        )
    encoder = ctx.encoder or load_encoder(e.model, e.device)
    tables: dict[str, pa.Table] = {}
    if ray:
        if not (run_dir / "utterances").is_dir():
            raise InputError(
                "the Ray engine embeds the part files of utterances/: segment with --engine ray first",
                run_dir / "utterances.parquet",
            )
        with ray_engine.configured_session(e.scale):
            stats = ray_engine.embed_parts(run_dir, e, encoder.model_id, encoder.dim, ctx.progress)
        n_rows = table_num_rows(run_dir, "embeddings")
    else:
        table, embed_stats = embed_utterances(utterances, encoder, e, ctx.progress)
        tables["embeddings"] = table
        stats, n_rows = {"engine": "local", **embed_stats.__dict__}, table.num_rows
    record = {
        "model": e.model,
        "model_id": encoder.model_id,
        "model_path": str(encoder.spec.path),
        "dim": encoder.dim,
        "counts": {"embeddings": n_rows},
        **stats,
    }
    return Output(record, tables, () if tables else ("embeddings",))


def codes_key(run_dir: Path, s: CodesSettings, model_id: str) -> str:
    """What the codes stage's output depends on: the embeddings' bytes, [codes], seed and model."""
    import json

    digest = table_sha256(table_path(run_dir, "embeddings"))
    params = json.dumps({"codes": section_values(s), "seed": s.seed, "model": model_id}, sort_keys=True)
    return hashlib.sha256(f"{digest}:{params}".encode()).hexdigest()


def _codes(ctx: Context) -> Output:
    """Fit the codes; reused when this run directory already holds codes made from the same
    embeddings, configuration and seed (they would be identical)."""
    s, run_dir, progress = ctx.settings, ctx.run_dir, ctx.progress
    emb_ids = ctx.table("embeddings", columns=["utterance_id"]).column("utterance_id")
    encoder = ctx.encoder or load_encoder(s.embed.model, s.embed.device)
    key = codes_key(run_dir, s, encoder.model_id)
    previous = stage_record(run_dir, "codes")
    if previous.get("key") == key and all(ctx.has(t) for t in ctx.stage.writes):
        return Output({**previous, "reused": True})
    if progress:
        progress("codes (clustering)", 0, 1)
    sample = fit_sample(run_dir, emb_ids, s)
    if sample is None:
        utterances, embeddings = ctx.table("utterances", columns=["utterance_id", "text"]), ctx.table("embeddings")
    else:
        utterances, embeddings = sample
    result = fit_codes(utterances, embeddings, encoder, s, population=None if sample is None else len(emb_ids))
    del utterances, embeddings
    codes, assignments = result.codes, result.assignments
    if sample is not None:
        codes, assignments = assign_beyond_sample(run_dir, result, s, progress)
    model_dir = run_dir / "topic_model"
    if result.topic_model is not None:
        tmp = run_dir / ".topic_model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_topic_model(result.topic_model, tmp)
        shutil.rmtree(model_dir, ignore_errors=True)
        tmp.rename(model_dir)
    if progress:
        progress("codes (clustering)", 1, 1)
    n = assignments.num_rows
    outliers = unassigned_count(assignments)
    record = {
        "method": result.method,
        "min_cluster_size": result.min_cluster_size,
        "key": key,
        "reused": False,
        "fitted_on": result.assignments.num_rows,
        "sampled": sample is not None,
        "counts": {"codes": codes.num_rows, "assigned": n - outliers, "unassigned": outliers},
        "outlier_share": round(outliers / n, 4) if n else 0.0,
    }
    return Output(record, {"codes": codes, "assignments": assignments})


def fit_sample(run_dir: Path, emb_ids: pa.ChunkedArray, s: CodesSettings) -> tuple[pa.Table, pa.Table] | None:
    """(utterances, embeddings) of the stratified sample the codes are fitted on, when there are more
    than [codes] fit_sample embedded utterances; None: fit on all of them."""
    size = s.fit_sample
    if not size or len(emb_ids) <= size:
        return None
    meta = read_table(run_dir, "utterances", columns=["utterance_id", "interview_id", "wave"])
    at = pc.index_in(emb_ids, value_set=meta.column("utterance_id"))
    stratum = pc.binary_join_element_wise(
        meta.column("interview_id").take(at),
        pc.cast(meta.column("wave").take(at), pa.string()),
        "\x1f",
        null_handling="replace",
        null_replacement="",
    )
    # integer codes, not ten million Python strings
    keep = stratified_sample(pc.dictionary_encode(stratum.combine_chunks()).indices.to_numpy(), size, s.seed)
    embeddings = read_rows(run_dir, "embeddings", keep)
    sampled = embeddings.column("utterance_id").combine_chunks()
    texts = pa.concat_tables(
        [
            batch.filter(pc.is_in(batch.column("utterance_id"), value_set=sampled))
            for batch in iter_table(run_dir, "utterances", ["utterance_id", "text"])
        ]
    )
    return texts, embeddings


def assign_beyond_sample(
    run_dir: Path, result, s: CodesSettings, progress: Progress | None = None
) -> tuple[pa.Table, pa.Table]:
    """Codes fitted on a sample: every embedded utterance assigned, and the codes' sizes recounted."""
    threshold = s.outlier_threshold
    if s.embed.scale.engine == "ray":
        with ray_engine.configured_session(s.embed.scale):
            if table_path(run_dir, "embeddings").is_dir():
                nearest = ray_engine.assign_all_parts(run_dir, result.codes, threshold, progress)
            else:
                nearest = assign_all(run_dir, result.codes, threshold, progress)
    else:
        nearest = assign_all(run_dir, result.codes, threshold, progress)
    assignments = merge_fitted(nearest, result.assignments)
    return recount_codes(result.codes, assignments), assignments


def _map(ctx: Context, framework_path: Path | str | None = None, overrides_path: Path | str | None = None) -> Output:
    run_dir, m = ctx.run_dir, ctx.settings
    framework = load_framework(framework_path or m.framework or None)
    utterances = ctx.table("utterances", columns=["utterance_id", "interview_id", "turn_index", "speaker_role", "text"])
    if framework.role_lines:  # a role nobody has would leave its concepts empty without a word
        framework.check_roles(pc.unique(utterances.column("speaker_role")).to_pylist())
    embeddings = StoredEmbeddings(run_dir)  # read a chunk of whole turns at a time
    codes, assignments = ctx.table("codes"), ctx.table("assignments")
    if ctx.progress:
        ctx.progress("map", 0, 1)
    # Framework texts must live in the same vector space as the utterances: use the model that embedded them.
    encoder = ctx.embedding_encoder()
    model = encoder.spec.name
    if encoder.dim != embeddings.dim:
        raise InputError(
            f"embeddings have {embeddings.dim} dimensions but model {model!r} gives {encoder.dim}; "
            "re-run `themeshift embed` with the model you map with",
            run_dir / "embeddings.parquet",
        )

    record_overrides: dict = {"path": None}
    live: dict[str, str | None] = {}
    o_path = find_overrides(run_dir, overrides_path, m.overrides)
    if o_path is not None:
        o_file = load_overrides(o_path, framework)
        kept, obsolete = split_obsolete(o_file, set(codes.column("fingerprint").to_pylist()))
        for o in obsolete:
            warnings.warn(
                f"{o_file.path}:{o.line}: obsolete override: no code with fingerprint {o.fingerprint} "
                f"in this run (codes changed since it was written); not applied",
                stacklevel=2,
            )
        live = {o.fingerprint: o.concept_id for o in kept}

        def as_dict(o) -> dict:
            return {
                "fingerprint": o.fingerprint,
                "concept": o.concept_id or "unmapped",
                "line": o.line,
                "label": o.label,
                "note": o.note,
            }

        record_overrides = {
            "path": str(Path(o_file.path).resolve()),
            "sha256": o_file.sha256,
            "applied": [as_dict(o) for o in kept],
            "obsolete": [as_dict(o) for o in obsolete],
        }

    result = map_stage(utterances, embeddings, codes, assignments, framework, encoder, m, live)
    atomic_write(run_dir / "data_structure.md", lambda tmp: Path(tmp).write_text(result.markdown, encoding="utf-8"))
    if ctx.progress:
        ctx.progress("map", 1, 1)

    cm, um = result.code_mapping, result.utterance_mapping
    n_codes, mapped_codes = len(cm.assigned), int((cm.assigned >= 0).sum())
    _, label_dimension = best_concept(um.concepts, framework)  # the label's dimension, as the tables give it
    shares = Counter(framework.dimension_ids[i] for i, ok in zip(label_dimension, um.mapped) if ok)
    n_utt = len(um.utterance_ids)
    record = {
        "framework": {
            "name": framework.name,
            "path": framework.path,
            "sha256": framework.sha256,
            "dimensions": framework.dimension_ids,
            "concepts": framework.concept_ids,
        },
        "method": m.method,
        "source": result.mapper.source,
        "model": model,
        "temperature": getattr(result.mapper, "temperature_", None),
        "overrides": record_overrides,
        "counts": {
            "codes": n_codes,
            "codes_mapped": mapped_codes,
            "codes_unmapped": n_codes - mapped_codes,
            "codes_overridden": int(cm.overridden.sum()),
            "utterances": n_utt,
            "utterances_mapped": int(um.mapped.sum()),
            "utterances_by_dimension": {d: shares.get(d, 0) for d in framework.dimension_ids},
        },
        "unmapped_code_share": round((n_codes - mapped_codes) / n_codes, 4) if n_codes else 0.0,
        "unmapped_utterance_share": round(1 - float(um.mapped.mean()), 4) if n_utt else 0.0,
    }
    record["warnings"] = mapping_warnings(
        record["unmapped_utterance_share"],
        record["temperature"],
        fitted=m.method == "similarity" and not m.temperature,
    )
    no_concept = um.extra.get("no_concept")
    if no_concept is not None and no_concept.any():
        record["counts"]["utterances_without_a_concept_for_their_role"] = int(no_concept.sum())
        record["warnings"].append(
            f"{int(no_concept.sum())} utterances are of speaker roles no concept of the "
            "framework applies to (see its 'roles'); they stay unmapped"
        )
    return Output(
        record,
        {
            "code_dimensions": result.code_dimensions,
            "utterance_dimensions": result.utterance_dimensions,
            "data_structure": result.data_structure,
        },
    )


def _shift(ctx: Context) -> Output:
    """utterances + utterance_dimensions (+ embeddings, assignments when present) -> the shift tables.
    With embeddings and interviewer turns, the questions are embedded (through the cache) for the
    question-matched shift."""
    s = ctx.settings
    utterances, dims = ctx.table("utterances"), ctx.table("utterance_dimensions")
    # Embeddings may be a folder of parts (the Ray engine): read only the analysed rows' vectors.
    embeddings = StoredEmbeddings(ctx.run_dir) if ctx.has("embeddings") else None
    assignments = ctx.optional("assignments")
    themes = shift_source_themes(utterances, dims, assignments, ctx.optional("codes"))
    utterances, dims, n_left_out = shift_sources(utterances, dims, s.source_types)
    questions = None
    if embeddings is not None and pc.any(utterances.column("is_interviewer")).as_py():
        questions = question_table(utterances, ctx.embedding_encoder(), s.embed)
    by_column = s.group_by != "speaker_role"
    interviews = ctx.table("interviews") if by_column else None
    speakers = ctx.optional("speakers") if by_column else None
    result = compute_shifts(utterances, dims, s, embeddings, assignments, ctx.progress, questions, interviews, speakers)
    if reason := missing_shift_reason(result.shifts.column("status").to_pylist()):  # never a silent absence
        result.warnings.append(reason)
    tables = {name: getattr(result, name) for name in SHIFT if name != "source_themes"}
    tables["source_themes"] = themes
    findings = headline(result.group_changes.to_pandas(), result.shift_dimensions.to_pandas(), s.alpha)
    status = Counter(result.shifts.column("status").to_pylist())
    significant = sum(1 for x in result.shifts.column("significant").to_pylist() if x)
    significant_fdr = sum(1 for q in result.shifts.column("q_value").to_pylist() if q is not None and q < s.alpha)
    record = {
        "inputs": ["utterances", "utterance_dimensions"]
        + [n for n, t in (("embeddings", embeddings), ("assignments", assignments)) if t is not None]
        + (["questions (interviewer turns, embedded)"] if questions is not None else []),
        "parameters": section_values(s),
        "counts": {
            **{name: tables[name].num_rows for name in SHIFT if name != "source_themes"},
            "speakers": len(set(result.shifts.column("speaker_id").to_pylist())),
            "status": dict(sorted(status.items())),
            "significant": significant,
            "significant_fdr": significant_fdr,
            "source_themes": themes.num_rows,
            "utterances_of_other_source_types_left_out": n_left_out,
        },
        "findings": findings,
        "warnings": result.warnings,
        "seconds_by_step": result.seconds,
    }
    return Output(record, tables)


def shift_source_themes(
    utterances: pa.Table, dims: pa.Table, assignments: pa.Table | None, codes: pa.Table | None
) -> pa.Table:
    """Themes by source type (triangulation), from every source whatever shift.source_types says."""
    if "source_type" not in utterances.column_names:
        utterances = utterances.append_column("source_type", pa.array(["interview"] * utterances.num_rows))
    if assignments is None or codes is None:
        assignments = codes = None
    return source_themes(utterances, dims, assignments, codes)


def shift_sources(utterances: pa.Table, dims: pa.Table, source_types: tuple[str, ...]):
    """Only the source types shift.source_types names (interviews by default); field notes and documents,
    when included, count for the case or speaker they are attributed to."""
    if "source_type" not in utterances.column_names:  # a run segmented before sources had types: interviews
        return utterances, dims, 0
    keep = pc.is_in(utterances.column("source_type"), value_set=pa.array(source_types, pa.string()))
    left_out = utterances.num_rows - int(pc.sum(keep).as_py() or 0)
    if not left_out:
        return utterances, dims, 0
    utterances = utterances.filter(keep)
    dims = dims.filter(pc.is_in(dims.column("utterance_id"), value_set=utterances.column("utterance_id")))
    return utterances, dims, left_out


def current_learn_record(run_dir: Path) -> dict | None:
    """The manifest's learn record while the run's utterance_dimensions is still the table learn wrote
    (None when learn never ran, or map ran again since)."""
    table = table_path(run_dir, "utterance_dimensions")
    rec = stage_record(run_dir, "learn")
    if not rec or not table.is_file() or rec.get("utterance_dimensions_sha256") != table_sha256(table):
        return None
    return rec


def framework_for(run_dir: Path, framework: str, framework_path: Path | str | None):
    """The framework given (framework_path), else the configured one ([map] framework), else the one
    the run was mapped with (manifest), else the default."""
    if framework_path is None and not framework:
        framework_path = stage_record(run_dir, "map").get("framework", {}).get("path") or None
    return load_framework(framework_path or framework or None)


def embedding_encoder(run_dir: Path, embed: EmbedSettings, encoder=None):
    """The encoder that embedded the run (manifest), so new texts share its vector space."""
    record = stage_record(run_dir, "embed")
    if encoder is not None and encoder.model_id == record.get("model_id", encoder.model_id):
        return encoder
    return load_encoder(record.get("model") or embed.model, embed.device)


def human_record(human_path: Path) -> dict:
    return {
        "path": str(Path(human_path).resolve()),
        "sha256": hashlib.sha256(Path(human_path).read_bytes()).hexdigest(),
    }


def _compare(
    ctx: Context, human_path: Path, mapping_path: Path | None = None, framework_path: Path | str | None = None
) -> Output:
    """Human codes (CSV / Parquet / .qdpx) vs the run's machine codes -> agreement, confusion,
    disagreements and the aligned human_codes tables."""
    run_dir, c = ctx.run_dir, ctx.settings
    human = read_human_codes(human_path, c.qdpx_max_members, c.qdpx_max_bytes)  # bad input fails first
    human = drop_suggestion_markers(human, (c.suggest_user, c.qdpx_user))  # suggest's markers, an export's machine
    framework = framework_for(run_dir, c.framework, framework_path)
    mapping = read_mapping(mapping_path, framework) if mapping_path else None
    learn_rec = current_learn_record(run_dir)
    # after learn: out-of-interview predictions for the utterances it was trained on
    cv = ctx.optional("utterance_dimensions_cv") if learn_rec else None
    dims, learned = dimensions_for_compare(ctx.table("utterance_dimensions"), cv, learn_rec)
    result = compare_codes(
        ctx.table("utterances"),
        ctx.table("sources"),
        human,
        framework,
        mapping,
        dims,
        ctx.optional("assignments"),
        c,
        learned_sets(ctx.optional("learned_codes") if learn_rec else None, learn_rec),
    )
    if learned:
        result.warnings.append(
            f"{learned['cross_validated_utterances']} human-coded utterances were the learned "
            "model's training data: the machine's labels there are cross-validated predictions"
        )
    record = {
        "human_codes": human_record(human_path),
        "mapping": str(Path(mapping_path).resolve()) if mapping_path else None,
        "framework": {"name": framework.name, "path": framework.path, "sha256": framework.sha256},
        "parameters": section_values(c),
        "counts": {**result.counts, **{n: getattr(result, n).num_rows for n in ("agreement", "confusion")}},
        "warnings": result.warnings,
        "learned": learned,
    }
    return Output(record, {n: getattr(result, n) for n in stage("compare").writes})


def _export(ctx: Context, out_path: Path, framework_path: Path | str | None = None) -> Output:
    """The run's sources and machine coding as a REFI-QDA project (.qdpx)."""
    framework = framework_for(ctx.run_dir, ctx.settings.framework, framework_path)
    utterances = ctx.table("utterances")
    book, sources, counts = machine_project(
        ctx.table("sources"),
        utterances,
        framework,
        *(ctx.optional(n) for n in ("utterance_dimensions", "codes", "assignments", "code_dimensions")),
    )
    interviews = ctx.optional("interviews")
    if interviews is not None:  # the manifest's columns as the sources' variables
        source_variables(sources, interviews)
    human = ctx.optional("human_codes")  # after compare: each coder as their own user
    if human is not None:
        counts.update(add_human_codings(book, sources, human, utterances, framework, ctx.settings.qdpx_user))
    cases = speaker_cases(utterances, ctx.optional("shifts"), ctx.optional("speakers"), interviews)
    counts["cases"] = len(cases)
    write_qdpx(out_path, f"themeshift: {ctx.run_dir.name}", ctx.settings.qdpx_user, book, sources, cases)
    return Output({"path": str(Path(out_path).resolve()), "framework": framework.name, "counts": counts})


def _report(ctx: Context, figures_dir: Path | str | None = None, out_path: Path | None = None) -> Output:
    """report.html from whatever tables the run directory holds (missing ones are named in the page),
    utterance_map.parquet (the map's 2-D layout, reused while the embeddings are unchanged) and,
    with figures_dir, each figure as SVG + CSV."""
    run_dir, rc, progress = ctx.run_dir, ctx.settings, ctx.progress
    tables, manifest = load_tables(run_dir)
    for name, why in manifest.get("_stale_tables", {}).items():
        warnings.warn(f"{run_dir / name}.parquet left out of the report: {why}", stacklevel=2)
    xy = ids = None
    map_record: dict = {}
    seconds_map = 0.0
    out: dict[str, pa.Table] = {}
    if "embeddings" in tables:
        t0 = time.perf_counter()
        emb = tables["embeddings"]
        digest = table_sha256(table_path(run_dir, "embeddings"))
        key = f"{digest}:{rc.projection}:{rc.map_neighbors}:{rc.map_max_points}:{rc.seed}"
        cached = run_dir / "utterance_map.parquet"
        previous = manifest.get("stages", {}).get("report", {}).get("map", {})
        reused = previous.get("key") == key and cached.is_file()
        if reused:
            # The key (the embeddings' digest and the map settings) is this cache's own validity check:
            # tables other stages rewrote since (shifts, agreement) do not make the layout stale.
            layout = pq.read_table(cached)
            ids = layout.column("utterance_id").to_pylist()
            xy = np.column_stack([layout.column("x").to_numpy(), layout.column("y").to_numpy()])
        else:
            if progress:
                progress(f"report map ({rc.projection})", 0, 1)
            keep = np.arange(emb.num_rows)  # the table holds only the ids: read the vectors laid out
            if emb.num_rows > rc.map_max_points > 0:  # a readable map and a small page for large corpora
                keep = np.sort(np.random.default_rng(rc.seed).choice(emb.num_rows, rc.map_max_points, replace=False))
            emb = read_rows(run_dir, "embeddings", keep)
            ids = emb.column("utterance_id").to_pylist()
            xy = project_2d(vectors(emb), rc.projection, rc.seed, rc.map_neighbors)
            out["utterance_map"] = pa.table(
                {"utterance_id": ids, "x": xy[:, 0], "y": xy[:, 1], "projection": [rc.projection] * len(ids)},
                schema=schema.UTTERANCE_MAP,
            )
        if progress:
            progress(f"report map ({rc.projection})", 1, 1)
        map_record = {"key": key, "projection": rc.projection, "rows": len(ids), "reused": reused}
        seconds_map = time.perf_counter() - t0
    out_path = Path(out_path) if out_path else run_dir / "report.html"
    try:
        title = f"themeshift report: {run_dir.resolve().name}"
        report = build_report(tables, manifest, rc, xy, ids, title=title)
    except BaseException:
        out_path.unlink(missing_ok=True)  # an older page no longer matches the run's tables: never leave it
        raise
    write_shareable(out_path, report.html)
    figures = [str(p) for p in write_figures(report.figures, Path(figures_dir))] if figures_dir else []
    record = {
        "path": str(out_path.resolve()),
        "bytes": out_path.stat().st_size,
        "sections": report.sections,
        "missing": report.missing,
        "figures": [f.slug for f in report.figures],
        "figure_files": figures,
        "parameters": section_values(rc),
        "map": map_record,
        "seconds_map": round(seconds_map, 3),
    }
    return Output(record, out)


def _learn(
    ctx: Context,
    human_path: Path,
    mapping_path: Path | None = None,
    framework_path: Path | str | None = None,
    level: str | None = None,
) -> Output:
    """Train on the human-coded utterances, code the rest; the learned tables and the model."""
    s, run_dir = ctx.settings, ctx.run_dir
    level = level or s.level
    # bad input fails first
    human = read_human_codes(human_path, s.compare.qdpx_max_members, s.compare.qdpx_max_bytes)
    framework = framework_for(run_dir, s.map.framework, framework_path)
    mapping = read_mapping(mapping_path, framework) if mapping_path else None
    framework_dims = framework_table(ctx)
    encoder = ctx.embedding_encoder()
    result = learn_stage(
        ctx.table("utterances"),
        ctx.table("sources"),
        ctx.table("embeddings"),
        framework_dims,
        human,
        framework,
        mapping,
        encoder,
        s,
        level,
        ctx.progress,
    )
    human_rec = human_record(human_path)
    model_info = save_model(run_dir / "learn_model", result, framework, encoder, s, human_rec["sha256"])
    # map's framework-similarity table is kept beside the learned one that replaces it
    tables = {"utterance_dimensions_framework": framework_dims}
    tables.update({name: getattr(result, name) for name in ctx.stage.writes if name not in tables})
    record = {
        "human_codes": human_rec,
        "mapping": str(Path(mapping_path).resolve()) if mapping_path else None,
        "framework": {"name": framework.name, "path": framework.path, "sha256": framework.sha256},
        "level": level,
        "feature_set": result.feature_set,
        "model": model_info,
        "parameters": section_values(s),
        "targets": "each coder's label (or, multi-code, label set) is a training row weighted 1 / (coders "
        "labelling the utterance); framework texts are weak examples (learn.framework_weight)",
        "counts": result.counts,
        "warnings": result.warnings,
    }

    def finish(rec: dict) -> None:  # what compare and suggest check to know utterance_dimensions is still learn's
        rec["utterance_dimensions_sha256"] = table_sha256(run_dir / "utterance_dimensions.parquet")

    return Output(record, tables, finish=finish)


def framework_table(ctx: Context) -> pa.Table:
    """The map stage's framework-similarity utterance_dimensions: the kept copy once learn has replaced
    the table, else the table itself (also when map has run again since learn)."""
    current = ctx.table("utterance_dimensions")
    if ctx.has("utterance_dimensions_framework") and current_learn_record(ctx.run_dir) is not None:
        return ctx.table("utterance_dimensions_framework")
    return current


def _suggest(
    ctx: Context,
    n: int | None = None,
    unit: str = "utterance",
    out: Path | None = None,
    framework_path: Path | str | None = None,
) -> Output:
    """Utterances (or interviews) whose hand-coding would help the model most, as CSV and .qdpx."""
    s, run_dir = ctx.settings, ctx.run_dir
    n = s.suggest_n if n is None else n
    framework = framework_for(run_dir, s.map.framework, framework_path)
    utterances = ctx.table("utterances")
    table, source, excluded = suggest(
        utterances,
        ctx.table("embeddings"),
        ctx.optional("learned_codes"),
        ctx.optional("utterance_dimensions"),
        n,
        unit,
        s.suggest_diversity,
        framework,
    )
    out = Path(out) if out else run_dir / f"suggestions_{unit}s.csv"
    paths = write_suggestions(table, out, ctx.table("sources"), utterances, framework, s.suggest_user)
    record = {
        "n": n,
        "unit": unit,
        "source": source,
        "suggested": table.num_rows,
        "excluded_hand_coded_interviews": excluded,
        "outputs": [str(p) for p in paths],
        "parameters": {k: section_values(s)[k] for k in ("suggest_diversity", "suggest_user")},
    }
    return Output(record)


BODIES: dict[str, Callable[..., Output]] = {
    "segment": _segment,
    "embed": _embed,
    "codes": _codes,
    "map": _map,
    "learn": _learn,
    "shift": _shift,
    "compare": _compare,
    "report": _report,
    "suggest": _suggest,
    "export": _export,
}


# ---- public entry points ------------------------------------------------------------------------


def run_segment(input_dir: Path, run_dir: Path, cfg: dict, progress: Progress | None = None) -> dict:
    return execute("segment", run_dir, cfg, progress, input_dir=input_dir)


def run_embed(run_dir: Path, cfg: dict, progress: Progress | None = None, encoder=None) -> dict:
    return execute("embed", run_dir, cfg, progress, encoder)


def run_codes(run_dir: Path, cfg: dict, progress: Progress | None = None, encoder=None) -> dict:
    return execute("codes", run_dir, cfg, progress, encoder)


def run_map(
    run_dir: Path,
    cfg: dict,
    framework_path: Path | str | None = None,
    overrides_path: Path | str | None = None,
    progress: Progress | None = None,
    encoder=None,
) -> dict:
    return execute("map", run_dir, cfg, progress, encoder, framework_path=framework_path, overrides_path=overrides_path)


def run_learn(
    run_dir: Path,
    human_path: Path,
    cfg: dict,
    mapping_path: Path | None = None,
    framework_path: Path | str | None = None,
    level: str | None = None,
    progress: Progress | None = None,
    encoder=None,
) -> dict:
    return execute(
        "learn",
        run_dir,
        cfg,
        progress,
        encoder,
        human_path=human_path,
        mapping_path=mapping_path,
        framework_path=framework_path,
        level=level,
    )


def run_shift(run_dir: Path, cfg: dict, progress: Progress | None = None, encoder=None) -> dict:
    return execute("shift", run_dir, cfg, progress, encoder)


def run_compare(
    run_dir: Path,
    human_path: Path,
    cfg: dict,
    mapping_path: Path | None = None,
    framework_path: Path | str | None = None,
) -> dict:
    return execute(
        "compare", run_dir, cfg, human_path=human_path, mapping_path=mapping_path, framework_path=framework_path
    )


def run_report(
    run_dir: Path,
    cfg: dict,
    figures_dir: Path | str | None = None,
    out_path: Path | None = None,
    progress: Progress | None = None,
) -> dict:
    return execute("report", run_dir, cfg, progress, figures_dir=figures_dir, out_path=out_path)


def run_suggest(
    run_dir: Path,
    cfg: dict,
    n: int | None = None,
    unit: str = "utterance",
    out: Path | None = None,
    framework_path: Path | str | None = None,
) -> dict:
    return execute("suggest", run_dir, cfg, n=n, unit=unit, out=out, framework_path=framework_path)


def run_export_qdpx(run_dir: Path, out_path: Path, cfg: dict, framework_path: Path | str | None = None) -> dict:
    record = execute("export", run_dir, cfg, out_path=out_path, framework_path=framework_path)
    return {k: record[k] for k in ("path", "framework", "counts")}


def run_anonymise(
    input_dir: Path,
    out_dir: Path,
    cfg: dict,
    key_path: Path | None = None,
    names_path: Path | None = None,
    review: bool = False,
    decisions_path: Path | None = None,
    progress: Progress | None = None,
    run_dir: Path | None = None,
) -> dict:
    """Pseudonymise input_dir into out_dir; the key (and review table) go beside the shared folder: the
    run directory when there is one, else out_dir. With run_dir, the record joins its manifest."""
    shared = Path(run_dir or out_dir)
    key_path = Path(key_path) if key_path else default_key_path(shared)
    review_path = key_path.parent / f"{shared.name}.pseudonym-review.csv" if review else None
    for what, p in (("key file", key_path), ("review table", review_path)):
        if p is not None and Path(p).resolve().is_relative_to(shared.resolve()):
            raise InputError(f"the {what} holds the original names: keep it outside {shared}", p)
    s = settings_for(AnonymiseSettings, cfg)
    record = anonymise_folder(input_dir, out_dir, s, key_path, names_path, review_path, decisions_path, progress)
    record["review_table"] = str(review_path) if review_path else None
    if run_dir is not None:
        update_manifest(run_dir, "anonymise", {k: v for k, v in record.items() if k != "written"}, cfg)
    return {**record, "key": str(key_path)}


def run_transform(
    fitted_run: Path, input_dir: Path, run_dir: Path, cfg: dict, progress: Progress | None = None
) -> dict:
    """Code new transcripts with the codes of an earlier run (same embedding model), and with its
    learned model when it has one: segment and embed run as themselves, then the fitted run's codes
    (recorded as the new run's codes stage) and learned model (as its learn stage)."""
    fitted_run, run_dir = Path(fitted_run), Path(run_dir)
    if not (fitted_run / "topic_model").is_dir():
        raise InputError("no topic_model/ here; run `themeshift codes` on it first", fitted_run)
    encoder = embedding_encoder(
        fitted_run, settings_for(EmbedSettings, cfg)
    )  # new text goes into the fitted run's vector space
    cfg = {**cfg, "embed": {**cfg["embed"], "model": stage_record(fitted_run, "embed")["model"]}}  # and says so
    run_segment(input_dir, run_dir, cfg, progress)
    run_embed(run_dir, cfg, progress, encoder=encoder)

    started = time.perf_counter()
    made_from = input_digests(run_dir, ["utterances", "embeddings"])
    assignments = assign_new(
        fitted_run / "topic_model", read_table(run_dir, "embeddings"), encoder, settings_for(CodesSettings, cfg)
    )
    write_table(run_dir, "assignments", assignments)
    shutil.copyfile(fitted_run / "codes.parquet", run_dir / "codes.parquet")
    record_lineage(run_dir, ["assignments", "codes"], made_from)
    record = {
        "fitted_run": str(fitted_run.resolve()),
        "counts": {
            "assigned": assignments.num_rows - unassigned_count(assignments),
            "unassigned": unassigned_count(assignments),
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
    update_manifest(run_dir, "codes", record, cfg)
    if (fitted_run / "learn_model" / "model.json").is_file():
        record["learned"] = apply_learned(fitted_run, run_dir, cfg, encoder, progress)
    return record


def apply_learned(fitted_run: Path, run_dir: Path, cfg: dict, encoder, progress: Progress | None) -> dict:
    """The fitted run's learned coder (learn_model/) codes the new transcripts: utterance_dimensions
    (source 'learned') and learned_codes, as learn writes them for its own run."""
    started = time.perf_counter()
    s = settings_for(LearnSettings, cfg)
    model, meta = load_model(fitted_run / "learn_model")
    framework = framework_for(fitted_run, s.map.framework, None)
    made_from = input_digests(run_dir, ["utterances", "embeddings"])
    utterances, embeddings = read_table(run_dir, "utterances"), read_table(run_dir, "embeddings")
    if meta["encoder"]["kept"] == "finetune":
        encoder = load_tuned_encoder(
            fitted_run / "learn_model" / meta["encoder"]["path"], encoder, meta["encoder"]["model_id"]
        )
        embeddings = embed_utterances(utterances, encoder, s.embed, progress)[0]
    dims, codes = apply_model(utterances, embeddings, model, meta, framework, encoder, s, fitted_run / "learn_model")
    write_table(run_dir, "utterance_dimensions", dims)
    write_table(run_dir, "learned_codes", codes)
    record_lineage(run_dir, ["utterance_dimensions", "learned_codes"], made_from)
    record = {
        "applied_from": str((fitted_run / "learn_model").resolve()),
        "level": meta["level"],
        "feature_set": meta["feature_set"],
        "encoder": meta["encoder"]["kept"],
        "framework": {"name": framework.name, "path": framework.path, "sha256": framework.sha256},
        "counts": {"utterances": len(set(dims.column("utterance_id").to_pylist()))},
        "utterance_dimensions_sha256": table_sha256(run_dir / "utterance_dimensions.parquet"),
        "outputs": ["utterance_dimensions.parquet", "learned_codes.parquet"],
        "seconds": round(time.perf_counter() - started, 3),
    }
    update_manifest(run_dir, "learn", record, cfg)
    return record
