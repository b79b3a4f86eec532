"""Every Parquet table the pipeline writes, in one place.

Each schema carries a one-line description per column (Arrow field metadata), so
`pyarrow.parquet.read_schema(path)` documents the file it came from. README.md
lists the same columns.
"""

from __future__ import annotations

import pyarrow as pa


def _f(name: str, type_: pa.DataType, doc: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


UTTERANCES = pa.schema(
    [
        _f("utterance_id", pa.string(), "stable id: <interview_id>-t<turn>-u<unit>"),
        _f("interview_id", pa.string(), "interview the utterance belongs to"),
        _f("source_file", pa.string(), "transcript path relative to the input folder"),
        _f("speaker_id", pa.string(), "resolved speaker id (speakers.csv, manifest or label)"),
        _f("speaker_label", pa.string(), "speaker label as written in the transcript"),
        _f("speaker_role", pa.string(), "role from speakers.csv; 'interviewer' for interviewers", True),
        _f("wave", pa.int32(), "interview wave (1, 2, ...); null when unknown", True),
        _f("turn_index", pa.int32(), "0-based speaker turn within the interview"),
        _f("sentence_index", pa.int32(), "0-based unit within the turn"),
        _f("start_char", pa.int64(), "start offset into the interview's source_text (sources.parquet)"),
        _f("end_char", pa.int64(), "end offset (exclusive): source_text[start_char:end_char] == text"),
        _f("timestamp", pa.float64(), "seconds from the start of the recording, when the transcript gives it", True),
        _f("text", pa.string(), "the unit's text, exactly as in source_text"),
        _f("is_interviewer", pa.bool_(), "true for interviewer turns"),
        _f("is_backchannel", pa.bool_(), "true for short fragments such as 'Yeah.' or 'Mm-hmm.'"),
        _f("coded", pa.bool_(), "true when later stages code this unit"),
        _f("exclusion_reason", pa.string(), "why the unit is not coded: interviewer, backchannel", True),
        _f(
            "source_type",
            pa.string(),
            "interview, fieldnote or document; for field notes and documents interview_id is "
            "the source's id, turn_index its paragraph and speaker_id the case (or speaker) it is attributed to",
        ),
        _f("page", pa.int32(), "1-based page of start_char in a PDF (or paged text) source; null otherwise", True),
    ]
)

SOURCES = pa.schema(
    [
        _f("interview_id", pa.string(), "interview id"),
        _f("source_file", pa.string(), "transcript path relative to the input folder"),
        _f("format", pa.string(), "txt, md, docx, vtt, srt, json or pdf"),
        _f("encoding", pa.string(), "text encoding the file was decoded with"),
        _f("sha256", pa.string(), "hash of the file's bytes"),
        _f("source_text", pa.string(), "the plain text all character offsets refer to"),
        _f("source_type", pa.string(), "interview, fieldnote or document"),
        _f(
            "page_starts",
            pa.list_(pa.int64()),
            "offset in source_text where each page begins (PDF: pages joined by "
            "form feeds); null when the source has no pages",
            True,
        ),
    ]
)

INTERVIEWS = pa.schema(
    [
        _f("interview_id", pa.string(), "interview id"),
        _f("source_file", pa.string(), "transcript path relative to the input folder"),
        _f("wave", pa.int32(), "interview wave", True),
        _f("date", pa.string(), "interview date as given in the manifest", True),
        _f("participant_id", pa.string(), "interviewee from the manifest or filename template", True),
        _f("n_turns", pa.int32(), "speaker turns parsed"),
        _f("n_utterances", pa.int32(), "units written to utterances.parquet"),
        _f("n_skipped_lines", pa.int32(), "non-empty lines before the first speaker label or headings"),
        _f("source_type", pa.string(), "interview, fieldnote or document (one row per source of any type)"),
    ]
)
# Extra manifest columns are appended to INTERVIEWS as string columns at run time.

SPEAKERS = pa.schema(
    [
        _f("speaker_id", pa.string(), "speaker id from speakers.csv"),
        _f("speaker_role", pa.string(), "role from speakers.csv", True),
        _f("is_interviewer", pa.bool_(), "true for interviewers"),
    ]
)
# speakers.csv's own columns (site, profession, ...; never 'name' or 'aliases') are appended as strings.

PSEUDONYM_REVIEW = pa.schema(
    [
        # written beside the key (it holds the originals), never into a run or the shared folder
        _f("source_file", pa.string(), "source path relative to the input folder"),
        _f("line", pa.int32(), "line (txt, md, vtt, srt, PDF text), paragraph (docx) or string number (json)"),
        _f("start_char", pa.int64(), "start of the original within that line, paragraph or string"),
        _f("end_char", pa.int64(), "end (exclusive) of the original"),
        _f("entity", pa.string(), "person, place, org, nhs_number, phone, email, date or postcode"),
        _f("original", pa.string(), "the text replaced"),
        _f("pseudonym", pa.string(), "what replaced it (in running text within [brackets])"),
        _f("context", pa.string(), "the surrounding text, the original marked <<like this>>"),
        _f(
            "recognizer",
            pa.string(),
            "what found it: SpacyRecognizer, a pattern, listed-<kind> (the study's list) "
            "or 'study-key (...)': a name found elsewhere in the study, by the recognisers in brackets",
        ),
        _f("score", pa.float64(), "the recogniser's confidence (for a study-key repeat: that of the first finding)"),
        _f(
            "agreeing",
            pa.int32(),
            "how many recognisers found this text somewhere in the study; rows are sorted by "
            "score, then agreeing, so the doubtful come first",
        ),
        _f("decision", pa.string(), "accept; set to reject and pass the table back with --decisions to keep the text"),
    ]
)

REJECTED = pa.schema(
    [
        _f("source_file", pa.string(), "file that could not be read"),
        _f("line", pa.int32(), "line of the problem, when known", True),
        _f("reason", pa.string(), "why it was rejected"),
    ]
)


def embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            _f("utterance_id", pa.string(), "utterance (coded utterances only)"),
            _f("vector", pa.list_(pa.float32(), dim), "L2-normalised sentence embedding"),
        ]
    )


def codes_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            _f("code_id", pa.int32(), "candidate first-order code (cluster) id, 0..n-1"),
            _f("label", pa.string(), "readable label from the top keywords"),
            _f("keywords", pa.list_(pa.string()), "top keywords, best first"),
            _f("size", pa.int32(), "utterances assigned to the code"),
            _f("exemplar_ids", pa.list_(pa.string()), "utterance ids ranked by representativeness"),
            _f("centroid", pa.list_(pa.float32(), dim), "L2-normalised mean embedding of the code's utterances"),
            _f("fingerprint", pa.string(), "stable id of the code's membership, survives re-runs on the same corpus"),
        ]
    )


ASSIGNMENTS = pa.schema(
    [
        _f("utterance_id", pa.string(), "coded utterance"),
        _f("code_id", pa.int32(), "assigned code; -1 when unassigned"),
        _f("probability", pa.float32(), "membership strength in [0, 1]"),
        _f("reason", pa.string(), "why code_id is -1 (outlier, too few utterances), else null", True),
    ]
)

UTTERANCE_DIMENSIONS = pa.schema(
    [
        _f("utterance_id", pa.string(), "coded utterance"),
        _f("dimension", pa.string(), "aggregate dimension of the framework"),
        _f(
            "probability",
            pa.float64(),
            "probability that the utterance expresses the dimension (sums to 1 per utterance)",
        ),
        _f(
            "is_argmax",
            pa.bool_(),
            "true for the dimension of the utterance's label: the dimension of its most probable "
            "second-order concept (learned: of its most probable class); nearly always its most probable dimension",
        ),
        _f("mapped", pa.bool_(), "false when the utterance's evidence is too weak or ambiguous to assign"),
        _f("second_order", pa.string(), "most probable second-order concept of the utterance", True),
        _f("source", pa.string(), "where the probability comes from: framework-similarity, learned or human"),
    ]
)

CODE_DIMENSIONS = pa.schema(
    [
        _f("code_id", pa.int32(), "candidate first-order code (codes.parquet)"),
        _f("fingerprint", pa.string(), "the code's stable fingerprint; overrides refer to it"),
        _f("label", pa.string(), "the code's readable label"),
        _f("size", pa.int32(), "utterances assigned to the code"),
        _f("dimension", pa.string(), "aggregate dimension of this row's concept"),
        _f("concept_id", pa.string(), "second-order concept id in the framework"),
        _f("second_order", pa.string(), "second-order concept name"),
        _f(
            "probability",
            pa.float64(),
            "calibrated probability that the code expresses the concept (sums to 1 per code)",
        ),
        _f("dimension_probability", pa.float64(), "probability of the concept's dimension: sum over its concepts"),
        _f("rank", pa.int32(), "1 = the concept the evidence favours most for this code"),
        _f("assigned", pa.bool_(), "true on the concept the code is mapped to (all false when unmapped)"),
        _f("status", pa.string(), "mapped or unmapped (best fit too weak or ambiguous, or a researcher said so)"),
        _f("margin", pa.float64(), "best minus second-best concept probability of the code"),
        _f("source", pa.string(), "who decided: framework-similarity, learned or human (an override)"),
    ]
)

DATA_STRUCTURE = pa.schema(
    [
        _f("dimension", pa.string(), "aggregate dimension id; null for unmapped codes", True),
        _f("dimension_name", pa.string(), "aggregate dimension name; null for unmapped codes", True),
        _f("concept_id", pa.string(), "second-order concept id; null for unmapped codes", True),
        _f("second_order", pa.string(), "second-order concept name; null for unmapped codes", True),
        _f("code_id", pa.int32(), "first-order code; null on a concept row that no code maps to", True),
        _f("fingerprint", pa.string(), "the code's fingerprint", True),
        _f("first_order", pa.string(), "the code's label (first-order code)", True),
        _f("size", pa.int32(), "utterances in the code", True),
        _f(
            "probability", pa.float64(), "the code's probability for its concept (its best concept when unmapped)", True
        ),
        _f("status", pa.string(), "mapped, unmapped, or empty (a concept no code maps to)"),
        _f("source", pa.string(), "framework-similarity, learned or human (an override)", True),
        _f("quotes", pa.list_(pa.string()), "exemplar quotes, most representative first"),
    ]
)

# --- shift stage: per-speaker profiles per wave, shifts between waves, group summaries ---

SPEAKER_WAVES = pa.schema(
    [
        _f("speaker_id", pa.string(), "speaker (ids differing only in case or punctuation are one speaker)"),
        _f("speaker_role", pa.string(), "role from speakers.csv", True),
        _f("wave", pa.int32(), "interview wave"),
        _f("dimension", pa.string(), "aggregate dimension of the framework"),
        _f("n_spoken", pa.int32(), "the speaker's units in the wave, coded or not"),
        _f("n_utterances", pa.int32(), "coded units with dimension probabilities (the profile's basis)"),
        _f(
            "share",
            pa.float64(),
            "mean probability of the dimension over the wave's utterances; null when n_utterances is 0",
            True,
        ),
        _f(
            "argmax_share",
            pa.float64(),
            "fraction of the wave's utterances whose most probable dimension this is",
            True,
        ),
        _f("too_few", pa.bool_(), "true when n_utterances < shift.min_utterances_per_wave"),
    ]
)

SPEAKER_CODES = pa.schema(
    [
        _f("speaker_id", pa.string(), "speaker"),
        _f("speaker_role", pa.string(), "role from speakers.csv", True),
        _f("wave", pa.int32(), "interview wave"),
        _f("code_id", pa.int32(), "first-order code (codes.parquet); codes absent from the wave have no row"),
        _f("n_utterances", pa.int32(), "the wave's utterances assigned to the code"),
        _f("share", pa.float64(), "n_utterances / n_assigned: share among the wave's assigned utterances"),
        _f("n_assigned", pa.int32(), "the wave's utterances with a code (code_id >= 0)"),
        _f("n_unassigned", pa.int32(), "the wave's utterances left unassigned (code_id -1), not in the profile"),
    ]
)

SHIFTS = pa.schema(
    [
        _f("speaker_id", pa.string(), "speaker"),
        _f("speaker_role", pa.string(), "role from speakers.csv", True),
        _f("wave_from", pa.int32(), "earlier wave; null when the speaker has no known wave", True),
        _f("wave_to", pa.int32(), "later wave; null for single-wave speakers", True),
        _f("wave_gap", pa.int32(), "wave_to - wave_from (2 when a speaker skipped a wave)", True),
        _f(
            "is_consecutive",
            pa.bool_(),
            "the speaker's adjacent observed waves (missing waves are skipped, not filled)",
        ),
        _f("is_first_last", pa.bool_(), "the speaker's first and last observed waves"),
        _f("n_from", pa.int32(), "utterances in wave_from", True),
        _f("n_to", pa.int32(), "utterances in wave_to", True),
        _f(
            "status",
            pa.string(),
            "ok; too_few_utterances; no_evidence (mostly unmapped or near-uniform profiles: no p-value); "
            "too_few_units (p cannot reach alpha); single_wave; no_wave",
        ),
        _f("reason", pa.string(), "why status is not ok", True),
        _f(
            "resample_unit",
            pa.string(),
            "unit resampled and permuted as a whole: interview (two or more interviews in a "
            "wave), block (contiguous answers within the one interview), turn or utterance (shift.resample_unit)",
            True,
        ),
        _f("n_units_from", pa.int32(), "resampling units in wave_from", True),
        _f("n_units_to", pa.int32(), "resampling units in wave_to", True),
        _f(
            "unmapped_share",
            pa.float64(),
            "share of the speaker's coded units the map left unmapped (the larger of the two waves)",
            True,
        ),
        _f(
            "evidence",
            pa.float64(),
            "0 = every unit's probabilities uniform, 1 = every unit certain (the smaller of the two waves)",
            True,
        ),
        _f("jsd", pa.float64(), "Jensen-Shannon distance (base 2, 0..1) between the dimension profiles", True),
        _f(
            "jsd_ci_low",
            pa.float64(),
            "bootstrap interval of jsd, lower end (units resampled within each wave, bias-corrected, >= 0)",
            True,
        ),
        _f("jsd_ci_high", pa.float64(), "bootstrap interval of jsd, upper end", True),
        _f("jsd_noise", pa.float64(), "mean jsd over permutations: the distance exchangeable units alone give", True),
        _f(
            "p_value",
            pa.float64(),
            "p-value of a change in the dimension profile, by p_method; null when status is no_evidence",
            True,
        ),
        _f(
            "p_method",
            pa.string(),
            "permutation (whole units shuffled between the waves; where they allow shift.min_labellings "
            "labellings) or moderated_t (per-dimension moderated t, variance borrowed from all speakers, "
            "Bonferroni over dimensions)",
            True,
        ),
        _f(
            "p_min",
            pa.float64(),
            "smallest p-value the permutation can give (1 / number of labellings when all are "
            "enumerated); the moderated t has no floor",
            True,
        ),
        _f("q_value", pa.float64(), "Benjamini-Hochberg q-value of p_value over all pairs with status ok", True),
        _f("significant", pa.bool_(), "p_value < shift.alpha and status ok", True),
        _f("from_dimension", pa.string(), "dimension whose share fell most", True),
        _f("to_dimension", pa.string(), "dimension whose share rose most", True),
        _f("direction", pa.string(), "'<from_dimension> -> <to_dimension>' (point estimate; see significant)", True),
        _f("max_change", pa.float64(), "largest rise of a dimension's share (to_dimension's change)", True),
        _f(
            "jsd_codes",
            pa.float64(),
            "Jensen-Shannon distance between the first-order code profiles (assigned utterances only)",
            True,
        ),
        _f("jsd_codes_ci_low", pa.float64(), "bootstrap interval of jsd_codes, lower end", True),
        _f("jsd_codes_ci_high", pa.float64(), "bootstrap interval of jsd_codes, upper end", True),
        _f("p_codes", pa.float64(), "permutation p-value of jsd_codes", True),
        _f("q_codes", pa.float64(), "Benjamini-Hochberg q-value of p_codes", True),
        _f("semantic_drift", pa.float64(), "cosine distance between the waves' mean utterance embeddings", True),
        _f("semantic_drift_ci_low", pa.float64(), "bootstrap interval of semantic_drift, lower end", True),
        _f("semantic_drift_ci_high", pa.float64(), "bootstrap interval of semantic_drift, upper end", True),
        _f(
            "semantic_noise",
            pa.float64(),
            "mean drift over the same permutations of whole units: the drift expected without change",
            True,
        ),
        _f(
            "semantic_ratio",
            pa.float64(),
            "semantic_drift / semantic_noise: about 1 without change, comparable across talkative and terse speakers",
            True,
        ),
        _f("p_semantic", pa.float64(), "permutation p-value of semantic_drift", True),
        _f("q_semantic", pa.float64(), "Benjamini-Hochberg q-value of p_semantic", True),
        _f(
            "n_matched_from",
            pa.int32(),
            "wave_from units answering a question that has a counterpart in wave_to (null without interviewer turns)",
            True,
        ),
        _f("n_matched_to", pa.int32(), "wave_to units answering a question that has a counterpart in wave_from", True),
        _f(
            "jsd_matched",
            pa.float64(),
            "jsd over the question-matched units only: the shift not explained by changed questions",
            True,
        ),
        _f("p_matched", pa.float64(), "permutation p-value of jsd_matched (same units and scheme)", True),
    ]
)

SOURCE_THEMES = pa.schema(
    [
        _f("source_type", pa.string(), "interview, fieldnote or document"),
        _f("level", pa.string(), "dimension, second_order (concept) or code (first-order code)"),
        _f("theme", pa.string(), "the dimension, concept, or '<code_id>: <label>'"),
        _f("n_units", pa.int32(), "coded units of this source type whose (most probable, mapped) theme this is"),
        _f("share", pa.float64(), "n_units / n_coded_units"),
        _f("n_sources", pa.int32(), "sources of this type where the theme appears at least once"),
        _f("source_share", pa.float64(), "n_sources / n_type_sources"),
        _f("n_coded_units", pa.int32(), "coded units of this source type"),
        _f("n_type_sources", pa.int32(), "sources of this type in the run"),
    ]
)

QUESTIONS = pa.schema(
    [
        _f("interview_id", pa.string(), "interview"),
        _f("turn_index", pa.int32(), "the answer turn"),
        _f("question_turn", pa.int32(), "the interviewer turn the answer follows"),
        _f(
            "vector",
            pa.list_(pa.float32()),
            "embedding of the question turn's text (fixed-size list, as in embeddings)",
        ),
    ]
)

SHIFT_DIMENSIONS = pa.schema(
    [
        _f("speaker_id", pa.string(), "speaker"),
        _f("speaker_role", pa.string(), "role from speakers.csv", True),
        _f("wave_from", pa.int32(), "earlier wave"),
        _f("wave_to", pa.int32(), "later wave"),
        _f("dimension", pa.string(), "aggregate dimension"),
        _f("share_from", pa.float64(), "share of the dimension in wave_from", True),
        _f("share_to", pa.float64(), "share of the dimension in wave_to", True),
        _f("change", pa.float64(), "share_to - share_from (signed)", True),
        _f(
            "change_ci_low",
            pa.float64(),
            "moderated-t interval of change, lower end (null unless status is ok or too_few_units)",
            True,
        ),
        _f("change_ci_high", pa.float64(), "moderated-t interval of change, upper end", True),
        _f(
            "change_se",
            pa.float64(),
            "standard error of change: between-unit variance moderated towards all speakers'",
            True,
        ),
        _f(
            "df",
            pa.float64(),
            "degrees of freedom of the moderated t (the speaker's units - 2, plus the prior's; inf: "
            "the speakers' variances differ no more than chance)",
            True,
        ),
        _f("p_value", pa.float64(), "moderated-t p-value of change (two-sided)", True),
        _f(
            "q_value",
            pa.float64(),
            "Benjamini-Hochberg q-value of p_value over all speakers, pairs and dimensions",
            True,
        ),
        _f(
            "change_shrunk",
            pa.float64(),
            "empirical-Bayes change: pulled towards the mean change of the speaker's group "
            "(group_changes; 'all' when the group has under 3 speakers) by v / (v + tau2)",
            True,
        ),
    ]
)

GROUP_SHIFTS = pa.schema(
    [
        _f("group", pa.string(), "speaker role (e.g. CORE, PROJECT) or 'all'"),
        _f("wave_from", pa.int32(), "earlier wave"),
        _f("wave_to", pa.int32(), "later wave"),
        _f("measure", pa.string(), "jsd, jsd_codes, semantic_drift, semantic_ratio or change"),
        _f("dimension", pa.string(), "dimension of a 'change' row; null for the other measures", True),
        _f("n_speakers", pa.int32(), "speakers with status ok and a value for the measure"),
        _f("mean", pa.float64(), "mean over speakers (each speaker counts once)", True),
        _f("ci_low", pa.float64(), "bootstrap interval over speakers, lower end; null under 2 speakers", True),
        _f("ci_high", pa.float64(), "bootstrap interval over speakers, upper end", True),
        _f(
            "n_significant",
            pa.int32(),
            "speakers with p < alpha (jsd, jsd_codes, semantic_drift); null otherwise",
            True,
        ),
    ]
)

GROUP_CHANGES = pa.schema(
    [
        _f("group", pa.string(), "'all' or a value of shift.group_by (the speaker role by default)"),
        _f("wave_from", pa.int32(), "earlier wave; null on a row of each speaker's own first -> last waves", True),
        _f("wave_to", pa.int32(), "later wave; null on a row of each speaker's own first -> last waves", True),
        _f("is_first_last", pa.bool_(), "the row compares each speaker's first and last observed waves"),
        _f(
            "level",
            pa.string(),
            "profile (the whole dimension profile), dimension, concept (most probable second-order "
            "concept) or code (first-order code)",
        ),
        _f("theme", pa.string(), "the dimension, concept or code id; null on a profile row", True),
        _f("n_speakers", pa.int32(), "speakers in the group with both waves (status ok or too_few_units)"),
        _f(
            "share_from",
            pa.float64(),
            "the group's share of the theme in wave_from (speakers weighted as in change)",
            True,
        ),
        _f("share_to", pa.float64(), "the group's share in wave_to", True),
        _f(
            "change",
            pa.float64(),
            "mean change across speakers (random effects, DerSimonian-Laird weights); profile: "
            "total-variation distance between the group's mean profiles (half the summed absolute changes)",
            True,
        ),
        _f(
            "ci_low",
            pa.float64(),
            "interval of change, lower end (Hartung-Knapp-Sidik-Jonkman t); null under 2 speakers and on profile rows",
            True,
        ),
        _f("ci_high", pa.float64(), "interval of change, upper end", True),
        _f("se", pa.float64(), "standard error of change (HKSJ)", True),
        _f("p_value", pa.float64(), "p-value of 'no mean change' (method)", True),
        _f("q_value", pa.float64(), "Benjamini-Hochberg q-value over the rows of the same level", True),
        _f(
            "method",
            pa.string(),
            "random_effects_hksj; profile rows: random_effects_bonferroni (the smallest dimension p "
            "times the number of dimensions)",
            True,
        ),
        _f("tau2", pa.float64(), "between-speaker variance of the true changes (squared share points)", True),
        _f(
            "i2",
            pa.float64(),
            "share of the spread of speakers' changes that is between speakers rather than sampling",
            True,
        ),
        _f("n_rising", pa.int32(), "speakers whose own share of the theme rose", True),
        _f("n_falling", pa.int32(), "speakers whose own share fell", True),
    ]
)

GROUP_CONTRASTS = pa.schema(
    [
        _f("group_a", pa.string(), "first group (alphabetical order)"),
        _f("group_b", pa.string(), "second group"),
        _f("wave_from", pa.int32(), "earlier wave; null for each speaker's first -> last", True),
        _f("wave_to", pa.int32(), "later wave; null for each speaker's first -> last", True),
        _f("is_first_last", pa.bool_(), "the row compares each speaker's first and last observed waves"),
        _f("level", pa.string(), "dimension or concept"),
        _f("theme", pa.string(), "the dimension or concept"),
        _f("n_a", pa.int32(), "speakers in group_a"),
        _f("n_b", pa.int32(), "speakers in group_b"),
        _f("change_a", pa.float64(), "group_a's mean change (group_changes)", True),
        _f("change_b", pa.float64(), "group_b's mean change", True),
        _f("difference", pa.float64(), "change_a - change_b", True),
        _f("ci_low", pa.float64(), "interval of the difference, lower end (Welch-Satterthwaite t)", True),
        _f("ci_high", pa.float64(), "interval of the difference, upper end", True),
        _f("se", pa.float64(), "standard error of the difference", True),
        _f(
            "p_value",
            pa.float64(),
            "p-value of 'the groups changed alike'; null when a group has under 2 speakers",
            True,
        ),
        _f("q_value", pa.float64(), "Benjamini-Hochberg q-value over the rows of the same level", True),
        _f("method", pa.string(), "random_effects_welch", True),
    ]
)

SHIFT_CODES_CHANGE = pa.schema(
    [
        _f("speaker_id", pa.string(), "speaker"),
        _f("speaker_role", pa.string(), "role from speakers.csv", True),
        _f("group", pa.string(), "the speaker's value of shift.group_by", True),
        _f("wave_from", pa.int32(), "earlier wave"),
        _f("wave_to", pa.int32(), "later wave"),
        _f("level", pa.string(), "concept (most probable second-order concept) or code (first-order code)"),
        _f("theme", pa.string(), "the concept, or the code id as text"),
        _f("code_id", pa.int32(), "the code (codes.parquet) on code rows", True),
        _f("share_from", pa.float64(), "share of the speaker's analysed units in wave_from with this theme"),
        _f("share_to", pa.float64(), "the same in wave_to"),
        _f("change", pa.float64(), "share_to - share_from"),
        _f("ci_low", pa.float64(), "moderated-t interval of change, lower end", True),
        _f("ci_high", pa.float64(), "moderated-t interval of change, upper end", True),
        _f("change_shrunk", pa.float64(), "change pulled towards the group's mean change (empirical Bayes)", True),
    ]
)

GROUP_TRAJECTORY = pa.schema(
    [
        _f("group", pa.string(), "speaker role or 'all'"),
        _f("wave", pa.int32(), "interview wave"),
        _f("dimension", pa.string(), "aggregate dimension"),
        _f("n_speakers", pa.int32(), "speakers with at least shift.min_utterances_per_wave utterances in the wave"),
        _f("n_utterances", pa.int32(), "their utterances"),
        _f("mean_share", pa.float64(), "mean of the speakers' shares (each speaker counts once)", True),
        _f("ci_low", pa.float64(), "bootstrap interval over speakers, lower end; null under 2 speakers", True),
        _f("ci_high", pa.float64(), "bootstrap interval over speakers, upper end", True),
        _f(
            "pooled_share", pa.float64(), "share over all their utterances pooled (talkative speakers weigh more)", True
        ),
    ]
)

HUMAN_CODES = pa.schema(
    [
        _f(
            "utterance_id",
            pa.string(),
            "utterance the human code falls on (overlap rule: configs [compare] min_overlap)",
        ),
        _f("interview_id", pa.string(), "interview of the utterance"),
        _f("coder", pa.string(), "human coder's name as given in the human-code file"),
        _f("code", pa.string(), "the human code's name as given"),
        _f(
            "code_path",
            pa.list_(pa.string()),
            "names of the codes it is nested in (REFI-QDA codebooks), outermost first",
        ),
        _f(
            "second_order",
            pa.string(),
            "framework concept id the code maps to; null for a dimension-only or unmapped code",
            True,
        ),
        _f("dimension", pa.string(), "framework dimension id the code maps to; null when outside the framework", True),
        _f(
            "mapped_via",
            pa.string(),
            "how the code was named: name, mapping (file), parent (enclosing code) or unmapped",
        ),
        _f(
            "overlap",
            pa.float64(),
            "share of the utterance's characters the coder's spans with this code cover (1 per utterance)",
        ),
        _f("coded", pa.bool_(), "true when the pipeline codes the utterance (only these are compared)"),
    ]
)

AGREEMENT = pa.schema(
    [
        _f("level", pa.string(), "dimension, second-order or code (machine clusters vs human codes)"),
        _f(
            "metric",
            pa.string(),
            "cohen_kappa, krippendorff_alpha, exact_set (share of utterances with the same set of "
            "labels), jaccard (mean overlap of the two label sets), label_kappa (kappa on whether "
            "one label applies), precision, recall, f1, ari, nmi, homogeneity, completeness, "
            "purity or matched_kappa",
        ),
        _f(
            "coder_a",
            pa.string(),
            "first rater (the machine for precision/recall/F1 and cluster metrics); for alpha the raters joined by '+'",
        ),
        _f(
            "coder_b",
            pa.string(),
            "second rater: a coder or 'consensus' (the human coders where they all agree); null for alpha",
            True,
        ),
        _f(
            "dimension",
            pa.string(),
            "label a precision/recall/F1 or label_kappa row is about ('macro' = mean over "
            "framework labels, 'micro' = from the counts pooled over them); null otherwise",
            True,
        ),
        _f("value", pa.float64(), "the statistic on all compared utterances; null when undefined", True),
        _f(
            "ci_low",
            pa.float64(),
            "lower bound of the interval ([compare] ci_level): bias-corrected percentile bootstrap; "
            "jackknife over interviews for the code level",
            True,
        ),
        _f("ci_high", pa.float64(), "upper bound of that interval", True),
        _f("n", pa.int64(), "utterances the statistic uses (for alpha: utterances with two or more codings)"),
    ]
)

CONFUSION = pa.schema(
    [
        _f("level", pa.string(), "dimension or second-order"),
        _f("coder_a", pa.string(), "rater whose label is label_a"),
        _f("coder_b", pa.string(), "rater whose label is label_b (a coder or 'consensus')"),
        _f("label_a", pa.string(), "coder_a's label ('none' = no framework code)"),
        _f("label_b", pa.string(), "coder_b's label"),
        _f("n", pa.int64(), "utterances with this pair of labels"),
    ]
)

DISAGREEMENTS = pa.schema(
    [
        _f("utterance_id", pa.string(), "utterance where the machine and a human coder differ"),
        _f("interview_id", pa.string(), "interview"),
        _f("speaker_id", pa.string(), "speaker"),
        _f("wave", pa.int32(), "interview wave", True),
        _f("start_char", pa.int64(), "start offset into source_text"),
        _f("end_char", pa.int64(), "end offset (exclusive)"),
        _f("level", pa.string(), "dimension or second-order"),
        _f("machine_label", pa.string(), "the machine's label ('none' = unmapped)"),
        _f("machine_probability", pa.float64(), "probability of the machine's most probable dimension", True),
        _f("coder", pa.string(), "the human coder who differs"),
        _f("human_label", pa.string(), "that coder's label (largest overlap when several; 'none' = left uncoded)"),
        _f("human_labels", pa.list_(pa.string()), "every label that coder gave the utterance"),
        _f("humans_agree", pa.bool_(), "true when all human coders of the utterance gave the same label", True),
        _f("text", pa.string(), "the utterance's text, for review"),
    ]
)

# --- report: the 2-D layout behind the report's map of utterances ---

UTTERANCE_MAP = pa.schema(
    [
        _f("utterance_id", pa.string(), "embedded (coded) utterance"),
        _f("x", pa.float64(), "first coordinate of the 2-D layout of the utterance embeddings"),
        _f("y", pa.float64(), "second coordinate"),
        _f("projection", pa.string(), "how the layout was made: umap (seeded, PCA initialisation) or pca"),
    ]
)

# --- learn stage: a model trained on the researchers' own coding ---

LEARNED_CODES = pa.schema(
    [
        _f("utterance_id", pa.string(), "coded utterance (every embedded utterance)"),
        _f(
            "label",
            pa.string(),
            "a class of the learned model: dimension, concept id or human code name; 'none' = no framework code",
        ),
        _f(
            "dimension",
            pa.string(),
            "framework dimension the label belongs to; null for 'none' and codes outside the framework",
            True,
        ),
        _f("second_order", pa.string(), "framework concept id the label belongs to; null when it names none", True),
        _f(
            "probability",
            pa.float64(),
            "model probability of the label: sums to 1 per utterance, except for a "
            "multi-code model (coders gave several codes per unit), where each label has its "
            "own one-vs-rest probability",
        ),
        _f("is_argmax", pa.bool_(), "true for the utterance's most probable label"),
        _f(
            "assigned",
            pa.bool_(),
            "true for every label of the utterance's coded set: the most probable label and, "
            "for a multi-code model, each label at or above its threshold (out-of-fold for "
            "human-coded utterances)",
        ),
        _f(
            "cross_validated",
            pa.bool_(),
            "true for human-coded utterances: predicted by a model that never saw their interview",
        ),
    ]
)

LEARN_EVAL = pa.schema(
    [
        _f(
            "evaluation",
            pa.string(),
            "cross-validation (the kept model), feature-set (each candidate), framework-similarity "
            "(the map stage on the same utterances), learning-curve, or held-out-frozen / "
            "held-out-finetune ([learn] encoder: learn's model with frozen and with fine-tuned "
            "sentence embeddings, trained on the same coded interviews and scored on the "
            "held-out ones; selected marks the encoder kept)",
        ),
        _f("feature_set", pa.string(), "feature set of the model; null for framework-similarity", True),
        _f("selected", pa.bool_(), "true on rows of the feature set the model keeps"),
        _f(
            "train_interviews",
            pa.int32(),
            "hand-coded interviews the model was trained on (per fold); null for framework-similarity",
            True,
        ),
        _f("draw", pa.int32(), "learning curve: which random draw of training interviews; null otherwise", True),
        _f("level", pa.string(), "dimension, second-order or code"),
        _f(
            "metric",
            pa.string(),
            "cohen_kappa, krippendorff_alpha, exact_set, jaccard, label_kappa or f1 (see agreement.parquet)",
        ),
        _f("coder_a", pa.string(), "first rater ('machine' = the model); for alpha the raters joined by '+'"),
        _f("coder_b", pa.string(), "second rater: a coder or 'consensus'; null for alpha", True),
        _f(
            "dimension",
            pa.string(),
            "'macro' (mean over labels) or 'micro' (pooled counts) on f1 and label_kappa rows; null otherwise",
            True,
        ),
        _f("value", pa.float64(), "the statistic on the held-out utterances; null when undefined", True),
        _f(
            "ci_low",
            pa.float64(),
            "bootstrap interval ([compare] bootstrap, ci_level, bootstrap_unit), lower end; "
            "null on learning-curve rows",
            True,
        ),
        _f("ci_high", pa.float64(), "upper end of that interval", True),
        _f("n", pa.int64(), "utterances the statistic uses"),
    ]
)

SUGGESTIONS = pa.schema(
    [
        _f("rank", pa.int32(), "1 = hand-code this first"),
        _f("unit", pa.string(), "utterance or interview"),
        _f("utterance_id", pa.string(), "suggested utterance; null when whole interviews are suggested", True),
        _f("interview_id", pa.string(), "interview"),
        _f("speaker_id", pa.string(), "speaker; null for interviews", True),
        _f("start_char", pa.int64(), "start offset into source_text; null for interviews", True),
        _f("end_char", pa.int64(), "end offset (exclusive); null for interviews", True),
        _f(
            "uncertainty",
            pa.float64(),
            "1 - the lead of the most probable label over the second (0 sure .. 1 a tie between two); "
            "for interviews the mean over its utterances",
        ),
        _f("novelty", pa.float64(), "1 - cosine similarity to the nearest already-chosen or hand-coded example"),
        _f(
            "score",
            pa.float64(),
            "what the choice maximised: (1 - suggest_diversity) * uncertainty + suggest_diversity * novelty",
        ),
        _f("predicted", pa.string(), "the model's most probable label"),
        _f("probability", pa.float64(), "its probability"),
        _f("source", pa.string(), "where the probabilities come from: learned or framework-similarity"),
        _f("text", pa.string(), "the utterance's text (interviews: its most uncertain utterance)"),
    ]
)
