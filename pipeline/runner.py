"""Stage runners: read what a stage needs from the run directory, call the stage's
plain function, write its tables and its manifest record. The CLI is a thin layer
over these."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.io.rundir import table_num_rows, update_manifest, write_table

Progress = Callable[[str, int, int], None]  # (what, done, total)


PSEUDONYMISED_INPUT = "pseudonymised_input"  # run --anonymise: the pseudonymised copy the run reads


def run_anonymise(input_dir: Path, out_dir: Path, cfg: dict, key_path: Path | None = None,
                  names_path: Path | None = None, review: bool = False, decisions_path: Path | None = None,
                  progress: Progress | None = None, run_dir: Path | None = None) -> dict:
    """Pseudonymise input_dir into out_dir; the key (and review table) go beside the shared folder: the
    run directory when there is one, else out_dir. With run_dir, the record joins its manifest."""
    from pipeline.anonymise import anonymise_folder, default_key_path
    from pipeline.errors import InputError

    shared = Path(run_dir or out_dir)
    key_path = Path(key_path) if key_path else default_key_path(shared)
    review_path = key_path.parent / f"{shared.name}.pseudonym-review.csv" if review else None
    for what, p in (("key file", key_path), ("review table", review_path)):
        if p is not None and Path(p).resolve().is_relative_to(shared.resolve()):
            raise InputError(f"the {what} holds the original names: keep it outside {shared}", p)
    record = anonymise_folder(input_dir, out_dir, cfg, key_path, names_path, review_path, decisions_path, progress)
    record["review_table"] = str(review_path) if review_path else None
    if run_dir is not None:
        update_manifest(run_dir, "anonymise", {k: v for k, v in record.items() if k != "written"}, cfg)
    return {**record, "key": str(key_path)}


def run_segment(input_dir: Path, run_dir: Path, cfg: dict, progress: Progress | None = None) -> dict:
    from pipeline.ingest import discover, segment_corpus

    started = time.perf_counter()
    total = len(discover(Path(input_dir), cfg))
    done = 0

    def on_file(rel: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(f"segment {rel}", done, max(total, done))

    run_dir = Path(run_dir)
    if cfg["scale"]["engine"] == "ray":
        from pipeline import ray_engine

        with ray_engine.configured_session(cfg):
            corpus = ray_engine.segment_corpus(input_dir, cfg, on_file)
        ray_engine.write_sharded(run_dir, "utterances", corpus.utterances, cfg["scale"]["shard_rows"])
    else:
        corpus = segment_corpus(input_dir, cfg, on_file)
        write_table(run_dir, "utterances", corpus.utterances)
    for name in ("sources", "interviews", "rejected", "speakers"):
        write_table(run_dir, name, getattr(corpus, name))
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
        "seconds": round(time.perf_counter() - started, 3),
    }
    update_manifest(run_dir, "segment", record, cfg)
    return record


def run_embed(run_dir: Path, cfg: dict, progress: Progress | None = None, encoder=None) -> dict:
    from pipeline.embed import embed_utterances, load_encoder
    from pipeline.errors import InputError
    from pipeline.io.rundir import read_table

    started = time.perf_counter()
    ray = cfg["scale"]["engine"] == "ray"
    # The Ray engine's workers read the utterance parts themselves: here only what the check needs.
    utterances = read_table(run_dir, "utterances", "themeshift segment",
                            columns=["coded", "exclusion_reason"] if ray else None)
    if not pc.any(utterances.column("coded")).as_py():
        reasons = Counter(r for r in utterances.column("exclusion_reason").to_pylist() if r)
        raise InputError(f"no utterance is left to code ({', '.join(f'{n} {r}' for r, n in reasons.most_common())}): "
                         "are the participants' labels taken for interviewers? See speakers.csv and "
                         "speakers.interviewer_labels", Path(run_dir) / "utterances.parquet")
    encoder = encoder or load_encoder(cfg["embed"]["model"], cfg["embed"]["device"])
    if ray:
        from pipeline import ray_engine

        if not (Path(run_dir) / "utterances").is_dir():
            raise InputError("the Ray engine embeds the part files of utterances/: segment with --engine ray "
                             "first", Path(run_dir) / "utterances.parquet")
        with ray_engine.configured_session(cfg):
            stats = ray_engine.embed_parts(Path(run_dir), cfg, encoder.model_id, encoder.dim, progress)
        n_rows = table_num_rows(run_dir, "embeddings")
    else:
        table, embed_stats = embed_utterances(utterances, encoder, cfg, progress)
        write_table(run_dir, "embeddings", table)
        stats, n_rows = {"engine": "local", **embed_stats.__dict__}, table.num_rows
    record = {"model": cfg["embed"]["model"], "model_id": encoder.model_id, "model_path": str(encoder.spec.path),
              "dim": encoder.dim, "counts": {"embeddings": n_rows}, **stats,
              "seconds": round(time.perf_counter() - started, 3)}
    update_manifest(run_dir, "embed", record, cfg)
    return record


def _codes_key(run_dir: Path, cfg: dict, model_id: str) -> str:
    """What the codes stage's output depends on: the embeddings' bytes, [codes], seed and model."""
    import hashlib
    import json

    from pipeline.io.rundir import table_path, table_sha256

    digest = table_sha256(table_path(run_dir, "embeddings"))
    params = json.dumps({"codes": cfg["codes"], "seed": cfg["run"]["seed"], "model": model_id}, sort_keys=True)
    return hashlib.sha256(f"{digest}:{params}".encode()).hexdigest()


def run_codes(run_dir: Path, cfg: dict, progress: Progress | None = None, encoder=None) -> dict:
    """Fit the codes; skipped when this run directory already holds codes made from the same
    embeddings, configuration and seed (they would be identical)."""
    import json
    import shutil

    from pipeline.embed import load_encoder
    from pipeline.io.rundir import read_table

    started = time.perf_counter()
    run_dir = Path(run_dir)
    emb_ids = read_table(run_dir, "embeddings", "themeshift embed", columns=["utterance_id"]).column("utterance_id")
    read_table(run_dir, "utterances", "themeshift segment", columns=["utterance_id"])  # the stale check
    encoder = encoder or load_encoder(cfg["embed"]["model"], cfg["embed"]["device"])
    key = _codes_key(run_dir, cfg, encoder.model_id)
    manifest = run_dir / "manifest.json"
    previous = json.loads(manifest.read_text(encoding="utf-8")).get("stages", {}).get("codes", {}) \
        if manifest.is_file() else {}
    outputs = [run_dir / "codes.parquet", run_dir / "assignments.parquet"]
    if previous.get("key") == key and all(p.is_file() for p in outputs):
        record = {**previous, "reused": True, "seconds": round(time.perf_counter() - started, 3)}
        update_manifest(run_dir, "codes", record, cfg)
        return record

    from pipeline.codes import fit_codes, save_topic_model, unassigned_count

    if progress:
        progress("codes (clustering)", 0, 1)
    sample = _fit_sample(run_dir, emb_ids, cfg)
    if sample is None:
        utterances = read_table(run_dir, "utterances", columns=["utterance_id", "text"])
        embeddings = read_table(run_dir, "embeddings")
    else:
        utterances, embeddings = sample
    result = fit_codes(utterances, embeddings, encoder, cfg, population=None if sample is None else len(emb_ids))
    del utterances, embeddings
    codes, assignments = result.codes, result.assignments
    if sample is not None:
        codes, assignments = _assign_beyond_sample(run_dir, result, cfg, progress)
    write_table(run_dir, "codes", codes)
    write_table(run_dir, "assignments", assignments)
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
    record = {"method": result.method, "min_cluster_size": result.min_cluster_size, "key": key, "reused": False,
              "fitted_on": result.assignments.num_rows, "sampled": sample is not None,
              "counts": {"codes": codes.num_rows, "assigned": n - outliers, "unassigned": outliers},
              "outlier_share": round(outliers / n, 4) if n else 0.0,
              "seconds": round(time.perf_counter() - started, 3)}
    update_manifest(run_dir, "codes", record, cfg)
    return record


def _fit_sample(run_dir: Path, emb_ids: pa.ChunkedArray, cfg: dict) -> tuple[pa.Table, pa.Table] | None:
    """(utterances, embeddings) of the stratified sample the codes are fitted on, when there are more
    than [codes] fit_sample embedded utterances; None: fit on all of them."""
    from pipeline.codes_scale import stratified_sample
    from pipeline.io.rundir import iter_table, read_rows, read_table

    size = cfg["codes"]["fit_sample"]
    if not size or len(emb_ids) <= size:
        return None
    meta = read_table(run_dir, "utterances", columns=["utterance_id", "interview_id", "wave"])
    at = pc.index_in(emb_ids, value_set=meta.column("utterance_id"))
    stratum = pc.binary_join_element_wise(meta.column("interview_id").take(at),
                                          pc.cast(meta.column("wave").take(at), pa.string()), "\x1f",
                                          null_handling="replace", null_replacement="")
    # integer codes, not ten million Python strings
    keep = stratified_sample(pc.dictionary_encode(stratum.combine_chunks()).indices.to_numpy(), size,
                             cfg["run"]["seed"])
    embeddings = read_rows(run_dir, "embeddings", keep)
    sampled = embeddings.column("utterance_id").combine_chunks()
    texts = pa.concat_tables([batch.filter(pc.is_in(batch.column("utterance_id"), value_set=sampled))
                              for batch in iter_table(run_dir, "utterances", ["utterance_id", "text"])])
    return texts, embeddings


def _assign_beyond_sample(run_dir: Path, result, cfg: dict,
                          progress: Progress | None = None) -> tuple[pa.Table, pa.Table]:
    """Codes fitted on a sample: every embedded utterance assigned, and the codes' sizes recounted."""
    from contextlib import nullcontext

    from pipeline.codes_scale import assign_all, merge_fitted, recount_codes

    engine = cfg["scale"]["engine"]
    if engine == "ray":
        from pipeline.ray_engine import configured_session
        session = configured_session(cfg)
    else:
        session = nullcontext()
    with session:
        nearest = assign_all(run_dir, result.codes, cfg["codes"]["outlier_threshold"], engine, progress)
    assignments = merge_fitted(nearest, result.assignments)
    return recount_codes(result.codes, assignments), assignments


def run_map(run_dir: Path, cfg: dict, framework_path: Path | str | None = None,
            overrides_path: Path | str | None = None, progress: Progress | None = None, encoder=None) -> dict:
    import warnings

    from pipeline.errors import InputError
    from pipeline.framework import load_framework
    from pipeline.io.rundir import atomic_write, read_table
    from pipeline.io.vectors import StoredEmbeddings
    from pipeline.map import map_stage, mapping_warnings
    from pipeline.overrides import find_overrides, load_overrides, split_obsolete

    started = time.perf_counter()
    run_dir = Path(run_dir)
    m = cfg["map"]
    framework = load_framework(framework_path or m["framework"] or None)
    utterances = read_table(run_dir, "utterances", "themeshift segment",
                            columns=["utterance_id", "interview_id", "turn_index", "speaker_role", "text"])
    if framework.role_lines:  # a role nobody has would leave its concepts empty without a word
        framework.check_roles(pc.unique(utterances.column("speaker_role")).to_pylist())
    embeddings = StoredEmbeddings(run_dir)  # read a chunk of whole turns at a time
    codes = read_table(run_dir, "codes", "themeshift codes")
    assignments = read_table(run_dir, "assignments", "themeshift codes")
    if progress:
        progress("map", 0, 1)
    # Framework texts must live in the same vector space as the utterances: use the model that embedded them.
    encoder = _embedding_encoder(run_dir, cfg, encoder)
    model = encoder.spec.name
    dim = embeddings.dim
    if encoder.dim != dim:
        raise InputError(f"embeddings have {dim} dimensions but model {model!r} gives {encoder.dim}; "
                         "re-run `themeshift embed` with the model you map with", run_dir / "embeddings.parquet")

    record_overrides: dict = {"path": None}
    live: dict[str, str | None] = {}
    o_path = find_overrides(run_dir, overrides_path, m["overrides"])
    if o_path is not None:
        o_file = load_overrides(o_path, framework)
        kept, obsolete = split_obsolete(o_file, set(codes.column("fingerprint").to_pylist()))
        for o in obsolete:
            warnings.warn(f"{o_file.path}:{o.line}: obsolete override: no code with fingerprint {o.fingerprint} "
                          f"in this run (codes changed since it was written); not applied")
        live = {o.fingerprint: o.concept_id for o in kept}
        as_dict = lambda o: {"fingerprint": o.fingerprint, "concept": o.concept_id or "unmapped",  # noqa: E731
                             "line": o.line, "label": o.label, "note": o.note}
        record_overrides = {"path": str(Path(o_file.path).resolve()), "sha256": o_file.sha256,
                            "applied": [as_dict(o) for o in kept], "obsolete": [as_dict(o) for o in obsolete]}

    result = map_stage(utterances, embeddings, codes, assignments, framework, encoder, cfg, live)
    write_table(run_dir, "code_dimensions", result.code_dimensions)
    write_table(run_dir, "utterance_dimensions", result.utterance_dimensions)
    write_table(run_dir, "data_structure", result.data_structure)
    md_path = run_dir / "data_structure.md"
    atomic_write(md_path, lambda tmp: Path(tmp).write_text(result.markdown, encoding="utf-8"))
    if progress:
        progress("map", 1, 1)

    cm, um = result.code_mapping, result.utterance_mapping
    n_codes, mapped_codes = len(cm.assigned), int((cm.assigned >= 0).sum())
    argmax = um.dimensions.argmax(axis=1) if len(um.dimensions) else []
    shares = Counter(framework.dimension_ids[i] for i, ok in zip(argmax, um.mapped) if ok)
    n_utt = len(um.utterance_ids)
    record = {
        "framework": {"name": framework.name, "path": framework.path, "sha256": framework.sha256,
                      "dimensions": framework.dimension_ids, "concepts": framework.concept_ids},
        "method": m["method"], "source": result.mapper.source, "model": model,
        "temperature": getattr(result.mapper, "temperature_", None),
        "overrides": record_overrides,
        "counts": {"codes": n_codes, "codes_mapped": mapped_codes, "codes_unmapped": n_codes - mapped_codes,
                   "codes_overridden": int(cm.overridden.sum()), "utterances": n_utt,
                   "utterances_mapped": int(um.mapped.sum()),
                   "utterances_by_dimension": {d: shares.get(d, 0) for d in framework.dimension_ids}},
        "unmapped_code_share": round((n_codes - mapped_codes) / n_codes, 4) if n_codes else 0.0,
        "unmapped_utterance_share": round(1 - float(um.mapped.mean()), 4) if n_utt else 0.0,
        "outputs": ["code_dimensions.parquet", "utterance_dimensions.parquet", "data_structure.parquet",
                    "data_structure.md"],
        "seconds": round(time.perf_counter() - started, 3),
    }
    record["warnings"] = mapping_warnings(record["unmapped_utterance_share"], record["temperature"],
                                          fitted=m["method"] == "similarity" and not m["temperature"])
    no_concept = um.extra.get("no_concept")
    if no_concept is not None and no_concept.any():
        record["counts"]["utterances_without_a_concept_for_their_role"] = int(no_concept.sum())
        record["warnings"].append(f"{int(no_concept.sum())} utterances are of speaker roles no concept of the "
                                  "framework applies to (see its 'roles'); they stay unmapped")
    for message in record["warnings"]:
        warnings.warn(message, stacklevel=2)
    update_manifest(run_dir, "map", record, cfg)
    return record


def run_shift(run_dir: Path, cfg: dict, progress: Progress | None = None, encoder=None) -> dict:
    """utterances + utterance_dimensions (+ embeddings, assignments when present) -> the shift tables.
    With embeddings and interviewer turns, the questions are embedded (through the cache) for the
    question-matched shift."""
    import warnings

    from pipeline.io.rundir import read_table, table_path
    from pipeline.io.vectors import StoredEmbeddings
    from pipeline.shift import compute_shifts

    started = time.perf_counter()
    run_dir = Path(run_dir)
    utterances = read_table(run_dir, "utterances", "themeshift segment")
    dims = read_table(run_dir, "utterance_dimensions", "themeshift map")
    # Embeddings may be a folder of parts (the Ray engine): read only the analysed rows' vectors.
    optional = {"embeddings": StoredEmbeddings(run_dir) if table_path(run_dir, "embeddings").exists() else None,
                "assignments": read_table(run_dir, "assignments") if table_path(run_dir, "assignments").exists()
                else None}
    themes = _source_themes(run_dir, utterances, dims, optional["assignments"])
    utterances, dims, n_left_out = _shift_sources(utterances, dims, cfg["shift"]["source_types"])
    questions = None
    if optional["embeddings"] is not None and pc.any(utterances.column("is_interviewer")).as_py():
        from pipeline.questions import question_table

        questions = question_table(utterances, _embedding_encoder(run_dir, cfg, encoder), cfg)
    by_column = cfg["shift"]["group_by"] != "speaker_role"
    interviews = read_table(run_dir, "interviews", "themeshift segment") if by_column else None
    speakers = (read_table(run_dir, "speakers", "themeshift segment")
                if by_column and table_path(run_dir, "speakers").exists() else None)
    result = compute_shifts(utterances, dims, cfg, optional["embeddings"], optional["assignments"], progress,
                            questions, interviews, speakers)
    names = ("speaker_waves", "speaker_codes", "shifts", "shift_dimensions", "group_shifts", "group_trajectory",
             "group_changes", "group_contrasts", "shift_codes_change")
    for name in names:
        write_table(run_dir, name, getattr(result, name))
    write_table(run_dir, "source_themes", themes)
    for message in result.warnings:
        warnings.warn(message, stacklevel=2)
    from pipeline.shift_groups import headline

    findings = headline(result.group_changes.to_pandas(), result.shift_dimensions.to_pandas(), cfg["shift"]["alpha"])
    status = Counter(result.shifts.column("status").to_pylist())
    significant = sum(1 for s in result.shifts.column("significant").to_pylist() if s)
    significant_fdr = sum(1 for q in result.shifts.column("q_value").to_pylist() if q is not None
                          and q < cfg["shift"]["alpha"])
    record = {
        "inputs": ["utterances", "utterance_dimensions"] + [n for n, t in optional.items() if t is not None]
                  + (["questions (interviewer turns, embedded)"] if questions is not None else []),
        "parameters": dict(cfg["shift"]),
        "counts": {**{name: getattr(result, name).num_rows for name in names},
                   "speakers": len(set(result.shifts.column("speaker_id").to_pylist())),
                   "status": dict(sorted(status.items())), "significant": significant,
                   "significant_fdr": significant_fdr, "source_themes": themes.num_rows,
                   "utterances_of_other_source_types_left_out": n_left_out},
        "findings": findings,
        "warnings": result.warnings,
        "seconds_by_step": result.seconds,
        "seconds": round(time.perf_counter() - started, 3),
    }
    update_manifest(run_dir, "shift", record, cfg)
    return record


def _source_themes(run_dir: Path, utterances, dims, assignments):
    """Themes by source type (triangulation), from every source whatever shift.source_types says."""
    from pipeline.io.rundir import read_table
    from pipeline.triangulate import source_themes

    if "source_type" not in utterances.column_names:
        utterances = utterances.append_column("source_type", pa.array(["interview"] * utterances.num_rows))
    codes = read_table(run_dir, "codes") if assignments is not None and (run_dir / "codes.parquet").is_file() else None
    return source_themes(utterances, dims, assignments if codes is not None else None, codes)


def _shift_sources(utterances, dims, source_types: list[str]):
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


def _framework_for(run_dir: Path, cfg: dict, framework_path: Path | str | None):
    """The framework the run was mapped with (manifest), unless one is given."""
    import json

    from pipeline.framework import load_framework

    if framework_path is None and not cfg.get("map", {}).get("framework"):
        manifest = Path(run_dir) / "manifest.json"
        stages = json.loads(manifest.read_text(encoding="utf-8")).get("stages", {}) if manifest.is_file() else {}
        framework_path = stages.get("map", {}).get("framework", {}).get("path") or None
    return load_framework(framework_path or cfg.get("map", {}).get("framework") or None)


def _optional_table(run_dir: Path, name: str):
    from pipeline.io.rundir import read_table

    return read_table(run_dir, name) if (Path(run_dir) / f"{name}.parquet").is_file() else None


def run_compare(run_dir: Path, human_path: Path, cfg: dict, mapping_path: Path | None = None,
                framework_path: Path | str | None = None) -> dict:
    """Human codes (CSV / Parquet / .qdpx) vs the run's machine codes -> agreement, confusion,
    disagreements and the aligned human_codes tables."""
    import hashlib
    import warnings

    from pipeline.compare import compare
    from pipeline.io.human_codes import read_human_codes, read_mapping
    from pipeline.io.rundir import read_table
    from pipeline.learn import current_learn_record, dimensions_for_compare, drop_suggestion_markers, learned_sets

    started = time.perf_counter()
    run_dir, c = Path(run_dir), cfg["compare"]
    human = read_human_codes(human_path, c["qdpx_max_members"], c["qdpx_max_bytes"])  # bad input fails first
    human = drop_suggestion_markers(human, cfg)  # `themeshift suggest` markers are nobody's coding
    framework = _framework_for(run_dir, cfg, framework_path)
    mapping = read_mapping(mapping_path, framework) if mapping_path else None
    utterances = read_table(run_dir, "utterances", "themeshift segment")
    sources = read_table(run_dir, "sources", "themeshift segment")
    dims = read_table(run_dir, "utterance_dimensions", "themeshift map")
    learn_rec = current_learn_record(run_dir)
    dims, learned = dimensions_for_compare(run_dir, dims, learn_rec)  # after learn: out-of-interview predictions
    result = compare(utterances, sources, human, framework, mapping, dims, _optional_table(run_dir, "assignments"),
                     cfg, learned_sets(run_dir, learn_rec))
    for name in ("agreement", "confusion", "disagreements", "human_codes"):
        write_table(run_dir, name, getattr(result, name))
    if learned:
        result.warnings.append(f"{learned['cross_validated_utterances']} human-coded utterances were the learned "
                               "model's training data: the machine's labels there are cross-validated predictions")
    for message in result.warnings:
        warnings.warn(message, stacklevel=2)
    record = {
        "human_codes": {"path": str(Path(human_path).resolve()),
                        "sha256": hashlib.sha256(Path(human_path).read_bytes()).hexdigest()},
        "mapping": str(Path(mapping_path).resolve()) if mapping_path else None,
        "framework": {"name": framework.name, "path": framework.path, "sha256": framework.sha256},
        "parameters": dict(c),
        "counts": {**result.counts, **{n: getattr(result, n).num_rows for n in ("agreement", "confusion")}},
        "warnings": result.warnings, "learned": learned,
        "outputs": ["agreement.parquet", "confusion.parquet", "disagreements.parquet", "human_codes.parquet"],
        "seconds": round(time.perf_counter() - started, 3),
    }
    update_manifest(run_dir, "compare", record, cfg)
    return record


def run_export_qdpx(run_dir: Path, out_path: Path, cfg: dict, framework_path: Path | str | None = None) -> dict:
    """The run's sources and machine coding as a REFI-QDA project (.qdpx)."""
    from pipeline.io.qdpx import machine_project, speaker_cases, write_qdpx
    from pipeline.io.rundir import read_table

    run_dir = Path(run_dir)
    framework = _framework_for(run_dir, cfg, framework_path)
    utterances = read_table(run_dir, "utterances", "themeshift segment")
    book, sources, counts = machine_project(
        read_table(run_dir, "sources", "themeshift segment"), utterances,
        framework, *(_optional_table(run_dir, n) for n in ("utterance_dimensions", "codes", "assignments",
                                                           "code_dimensions")))
    cases = speaker_cases(utterances, _optional_table(run_dir, "shifts"))
    counts["cases"] = len(cases)
    write_qdpx(out_path, f"themeshift: {run_dir.name}", cfg["compare"]["qdpx_user"], book, sources, cases)
    return {"path": str(Path(out_path).resolve()), "framework": framework.name, "counts": counts}


def run_transform(fitted_run: Path, input_dir: Path, run_dir: Path, cfg: dict,
                  progress: Progress | None = None) -> dict:
    """Code new transcripts with the codes of an earlier run (same embedding model)."""
    import json
    import shutil

    from pipeline.codes import assign_new, unassigned_count
    from pipeline.errors import InputError
    from pipeline.io.rundir import read_table

    fitted_run, run_dir = Path(fitted_run), Path(run_dir)
    if not (fitted_run / "topic_model").is_dir():
        raise InputError("no topic_model/ here; run `themeshift codes` on it first", fitted_run)
    encoder = _embedding_encoder(fitted_run, cfg)  # new text goes into the fitted run's vector space
    cfg["embed"]["model"] = json.loads((fitted_run / "manifest.json").read_text(encoding="utf-8"))[
        "stages"]["embed"]["model"]  # and the new run's manifest says so
    run_segment(input_dir, run_dir, cfg, progress)
    run_embed(run_dir, cfg, progress, encoder=encoder)

    started = time.perf_counter()
    embeddings = read_table(run_dir, "embeddings")
    assignments = assign_new(fitted_run / "topic_model", embeddings, encoder, cfg)
    write_table(run_dir, "assignments", assignments)
    shutil.copyfile(fitted_run / "codes.parquet", run_dir / "codes.parquet")
    record = {"fitted_run": str(fitted_run.resolve()), "counts": {
        "assigned": assignments.num_rows - unassigned_count(assignments),
        "unassigned": unassigned_count(assignments)}, "seconds": round(time.perf_counter() - started, 3)}
    update_manifest(run_dir, "codes", record, cfg)
    if (fitted_run / "learn_model" / "model.json").is_file():
        record["learned"] = _apply_learned(fitted_run, run_dir, cfg, encoder, progress)
    return record


def _apply_learned(fitted_run: Path, run_dir: Path, cfg: dict, encoder, progress: Progress | None) -> dict:
    """The fitted run's learned coder (learn_model/) codes the new transcripts: utterance_dimensions
    (source 'learned') and learned_codes, as learn writes them for its own run."""
    import hashlib

    from pipeline.io.rundir import read_table
    from pipeline.learn import apply_model, embed_table
    from pipeline.learn_model import load_model

    started = time.perf_counter()
    model, meta = load_model(fitted_run / "learn_model")
    framework = _framework_for(fitted_run, cfg, None)
    utterances = read_table(run_dir, "utterances")
    embeddings = read_table(run_dir, "embeddings")
    if meta["encoder"]["kept"] == "finetune":
        from sentence_transformers import SentenceTransformer

        from pipeline.learn_finetune import TunedEncoder

        tuned = SentenceTransformer(str(fitted_run / "learn_model" / meta["encoder"]["path"]), device="cpu",
                                    local_files_only=True)
        encoder = TunedEncoder(encoder, tuned, meta["encoder"]["model_id"].rsplit("-", 1)[-1])
        embeddings = embed_table(utterances, encoder, cfg, progress=progress)
    dims, codes = apply_model(utterances, embeddings, model, meta, framework, encoder, cfg,
                              fitted_run / "learn_model")
    write_table(run_dir, "utterance_dimensions", dims)
    write_table(run_dir, "learned_codes", codes)
    record = {"applied_from": str((fitted_run / "learn_model").resolve()), "level": meta["level"],
              "feature_set": meta["feature_set"], "encoder": meta["encoder"]["kept"],
              "framework": {"name": framework.name, "path": framework.path, "sha256": framework.sha256},
              "counts": {"utterances": len(set(dims.column("utterance_id").to_pylist()))},
              "utterance_dimensions_sha256": hashlib.sha256((run_dir / "utterance_dimensions.parquet").read_bytes())
              .hexdigest(),
              "outputs": ["utterance_dimensions.parquet", "learned_codes.parquet"],
              "seconds": round(time.perf_counter() - started, 3)}
    update_manifest(run_dir, "learn", record, cfg)
    return record


def run_report(run_dir: Path, cfg: dict, figures_dir: Path | str | None = None, out_path: Path | None = None,
               progress: Progress | None = None) -> dict:
    """report.html from whatever tables the run directory holds (missing ones are named in the page),
    utterance_map.parquet (the map's 2-D layout, reused while the embeddings are unchanged) and,
    with figures_dir, each figure as SVG + CSV."""

    import numpy as np
    import pyarrow as pa

    from pipeline import schema
    from pipeline.embed import vectors
    from pipeline.errors import InputError
    from pipeline.io.rundir import read_rows, table_path, table_sha256
    from pipeline.report import build_report, load_tables, project_2d, write_figures, write_shareable

    started = time.perf_counter()
    run_dir, rc = Path(run_dir), cfg["report"]
    if rc["projection"] not in ("umap", "pca"):
        raise InputError(f"report.projection must be umap or pca, got {rc['projection']!r}")
    tables, manifest = load_tables(run_dir)
    import warnings

    for name, why in manifest.get("_stale_tables", {}).items():
        warnings.warn(f"{run_dir / name}.parquet left out of the report: {why}", stacklevel=2)
    xy = ids = None
    map_record: dict = {}
    seconds_map = 0.0
    if "embeddings" in tables:
        t0 = time.perf_counter()
        emb = tables["embeddings"]
        digest = table_sha256(table_path(run_dir, "embeddings"))
        key = f"{digest}:{rc['projection']}:{rc['map_neighbors']}:{rc['map_max_points']}:{cfg['run']['seed']}"
        cached = run_dir / "utterance_map.parquet"
        previous = manifest.get("stages", {}).get("report", {}).get("map", {})
        if previous.get("key") == key and cached.is_file():
            # The key (the embeddings' digest and the map settings) is this cache's own validity check:
            # tables other stages rewrote since (shifts, agreement) do not make the layout stale.
            layout = pq.read_table(cached)
            ids = layout.column("utterance_id").to_pylist()
            xy = np.column_stack([layout.column("x").to_numpy(), layout.column("y").to_numpy()])
        else:
            if progress:
                progress(f"report map ({rc['projection']})", 0, 1)
            keep = np.arange(emb.num_rows)  # the table holds only the ids: read the vectors laid out
            if emb.num_rows > rc["map_max_points"] > 0:  # a readable map and a small page for large corpora
                keep = np.sort(np.random.default_rng(cfg["run"]["seed"]).choice(
                    emb.num_rows, rc["map_max_points"], replace=False))
            emb = read_rows(run_dir, "embeddings", keep)
            ids = emb.column("utterance_id").to_pylist()
            xy = project_2d(vectors(emb), rc["projection"], cfg["run"]["seed"], rc["map_neighbors"])
            write_table(run_dir, "utterance_map", pa.table(
                {"utterance_id": ids, "x": xy[:, 0], "y": xy[:, 1], "projection": [rc["projection"]] * len(ids)},
                schema=schema.UTTERANCE_MAP))
        if progress:
            progress(f"report map ({rc['projection']})", 1, 1)
        map_record = {"key": key, "projection": rc["projection"], "rows": len(ids), "reused": previous.get("key") == key
                      and cached.is_file()}
        seconds_map = time.perf_counter() - t0
    out_path = Path(out_path) if out_path else run_dir / "report.html"
    try:
        report = build_report(tables, manifest, cfg, xy, ids, title=f"themeshift report: {run_dir.resolve().name}")
    except BaseException:
        out_path.unlink(missing_ok=True)  # an older page no longer matches the run's tables: never leave it
        raise
    write_shareable(out_path, report.html)
    figures = [str(p) for p in write_figures(report.figures, Path(figures_dir))] if figures_dir else []
    record = {"path": str(out_path.resolve()), "bytes": out_path.stat().st_size, "sections": report.sections,
              "missing": report.missing, "figures": [f.slug for f in report.figures], "figure_files": figures,
              "parameters": dict(rc), "map": map_record, "seconds_map": round(seconds_map, 3),
              "seconds": round(time.perf_counter() - started, 3)}
    # config=None: the manifest keeps the configuration the tables were made with
    update_manifest(run_dir, "report", record, None)
    return record


def _embedding_encoder(run_dir: Path, cfg: dict, encoder=None):
    """The encoder that embedded the run (manifest), so new texts share its vector space."""
    import json

    from pipeline.embed import load_encoder

    manifest = Path(run_dir) / "manifest.json"
    embed = json.loads(manifest.read_text(encoding="utf-8")).get("stages", {}).get("embed", {}) \
        if manifest.is_file() else {}
    if encoder is not None and encoder.model_id == embed.get("model_id", encoder.model_id):
        return encoder
    return load_encoder(embed.get("model") or cfg["embed"]["model"], cfg["embed"]["device"])


def run_learn(run_dir: Path, human_path: Path, cfg: dict, mapping_path: Path | None = None,
              framework_path: Path | str | None = None, level: str | None = None,
              progress: Progress | None = None, encoder=None) -> dict:
    """Train on the human-coded utterances, code the rest; write the learned tables and the model."""
    import hashlib
    import warnings

    from pipeline.io.human_codes import read_human_codes, read_mapping
    from pipeline.io.rundir import read_table
    from pipeline.learn import learn_stage
    from pipeline.learn_model import save_model

    started = time.perf_counter()
    run_dir, c = Path(run_dir), cfg["compare"]
    level = level or cfg["learn"]["level"]
    human = read_human_codes(human_path, c["qdpx_max_members"], c["qdpx_max_bytes"])  # bad input fails first
    framework = _framework_for(run_dir, cfg, framework_path)
    mapping = read_mapping(mapping_path, framework) if mapping_path else None
    utterances = read_table(run_dir, "utterances", "themeshift segment")
    sources = read_table(run_dir, "sources", "themeshift segment")
    embeddings = read_table(run_dir, "embeddings", "themeshift embed")
    framework_dims = framework_table(run_dir)
    encoder = _embedding_encoder(run_dir, cfg, encoder)
    result = learn_stage(utterances, sources, embeddings, framework_dims, human, framework, mapping, encoder, cfg,
                         level, progress)
    write_table(run_dir, "utterance_dimensions_framework", framework_dims)
    for name in ("utterance_dimensions", "utterance_dimensions_cv", "learned_codes", "learn_eval"):
        write_table(run_dir, name, getattr(result, name))
    human_sha = hashlib.sha256(Path(human_path).read_bytes()).hexdigest()
    model_info = save_model(run_dir / "learn_model", result, framework, encoder, cfg, human_sha)
    for message in result.warnings:
        warnings.warn(message, stacklevel=2)
    record = {
        "human_codes": {"path": str(Path(human_path).resolve()), "sha256": human_sha},
        "mapping": str(Path(mapping_path).resolve()) if mapping_path else None,
        "framework": {"name": framework.name, "path": framework.path, "sha256": framework.sha256},
        "level": level, "feature_set": result.feature_set, "model": model_info,
        "parameters": dict(cfg["learn"]),
        "targets": "each coder's label (or, multi-code, label set) is a training row weighted 1 / (coders "
                   "labelling the utterance); framework texts are weak examples (learn.framework_weight)",
        "counts": result.counts, "warnings": result.warnings,
        "utterance_dimensions_sha256": hashlib.sha256((run_dir / "utterance_dimensions.parquet").read_bytes())
        .hexdigest(),
        "outputs": ["utterance_dimensions.parquet", "utterance_dimensions_framework.parquet",
                    "utterance_dimensions_cv.parquet", "learned_codes.parquet", "learn_eval.parquet",
                    "learn_model/"],
        "seconds": round(time.perf_counter() - started, 3),
    }
    update_manifest(run_dir, "learn", record, cfg)
    return record


def framework_table(run_dir: Path):
    """The map stage's framework-similarity utterance_dimensions: the kept copy once learn has replaced
    the table, else the table itself (also when map has run again since learn)."""
    from pipeline.io.rundir import read_table
    from pipeline.learn import current_learn_record

    run_dir = Path(run_dir)
    current = read_table(run_dir, "utterance_dimensions", "themeshift map")
    if (run_dir / "utterance_dimensions_framework.parquet").is_file() and current_learn_record(run_dir) is not None:
        return read_table(run_dir, "utterance_dimensions_framework")
    return current


def run_suggest(run_dir: Path, cfg: dict, n: int | None = None, unit: str = "utterance",
                out: Path | None = None, framework_path: Path | str | None = None) -> dict:
    """Utterances (or interviews) whose hand-coding would help the model most, as CSV and .qdpx."""
    from pipeline.io.rundir import read_table
    from pipeline.suggest import suggest, write_suggestions

    run_dir = Path(run_dir)
    n = cfg["learn"]["suggest_n"] if n is None else n
    framework = _framework_for(run_dir, cfg, framework_path)
    table, source, excluded = suggest(
        read_table(run_dir, "utterances", "themeshift segment"), read_table(run_dir, "embeddings", "themeshift embed"),
        _optional_table(run_dir, "learned_codes"), _optional_table(run_dir, "utterance_dimensions"), n, unit, cfg)
    out = Path(out) if out else run_dir / f"suggestions_{unit}s.csv"
    paths = write_suggestions(table, out, read_table(run_dir, "sources", "themeshift segment"),
                              read_table(run_dir, "utterances"), framework, cfg)
    record = {"n": n, "unit": unit, "source": source, "suggested": table.num_rows,
              "excluded_hand_coded_interviews": excluded, "outputs": [str(p) for p in paths],
              "parameters": {k: cfg["learn"][k] for k in ("suggest_diversity", "suggest_user")}}
    update_manifest(run_dir, "suggest", record, cfg)
    return record
