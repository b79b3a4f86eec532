"""The Methods section of report.html: how the shift and group tests work, and a paragraph for a
paper's methods section written from the run's manifest."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.report_context import ReportContext
from pipeline.report_html import esc, is_missing, join_and


def _shift_method(c: ReportContext) -> str:
    sc = c.s.shift
    k = sc.blocks_per_interview
    s = c.t["shifts"]
    methods = s["p_method"].value_counts().to_dict() if "p_method" in s else {}
    used = ", ".join(f"{n} by {m.replace('_', ' ')}" for m, n in sorted(methods.items())) or "none"
    return (
        "<p>Magnitude: Jensen-Shannon distance between a speaker's dimension profiles in two waves "
        "(0 = the same mix of dimensions, 1 = no overlap). Direction: the dimension whose share fell most → the "
        "one that rose most. Sentences of one answer, and answers close together in one interview, share a "
        "question and a topic, so they are not independent evidence: intervals and tests work on whole units, "
        "whole interviews where a speaker has two or more in a wave, otherwise the interview cut into "
        f"{k} runs of whole answers (<code>shift.resample_unit = {esc(sc.resample_unit)}</code>). "
        "A speaker's p-value comes from a permutation of those units where they allow at least "
        f"{sc.min_labellings} labellings, otherwise from a moderated t per dimension (Bonferroni over the "
        "dimensions): each speaker's between-unit variance is pulled towards the variance all speakers show, so "
        "two or three interviews per wave, or one, still give a continuous p-value"
        + (
            ", and with one interview per wave the variance between two interviews of a person, which blocks of "
            "one interview cannot show, is borrowed from the other speakers"
            if sc.interview_variance == "borrow"
            else ""
        )
        + f". Pairs tested here: {used}. With many speakers read the q-value: among speakers with "
        f"q &lt; {sc.alpha}, about {sc.alpha:.0%} are expected to be false discoveries. Semantic drift gets "
        "a p-value only from whole interviews. A speaker's p-value speaks of this speaker's talk in these "
        "interviews; with one interview per wave it cannot fully separate a change of mind from a different "
        "conversation: the group estimates above are the firmer finding.</p>"
    )


def _group_method(c: ReportContext) -> str:
    """How group changes are estimated and tested, with how the test did on data without change."""
    return (
        "<p>A group's change is the mean of its speakers' changes in a dimension's share, in points (a share of "
        "0.30 is 30 points), each speaker weighted by how precisely their own change is known (a random-effects "
        "model: Hartung-Knapp-Sidik-Jonkman interval, t with speakers - 1 degrees of freedom). Speakers, not "
        "sentences, are the units of this test, so it holds however much sentences of one interview hang "
        "together. <em>tau²</em> and <em>I²</em> say how much the speakers differ beyond sampling. Two groups' "
        "changes are compared by their difference, with a Welch interval. q-values correct the p-values for "
        f"testing many themes (Benjamini-Hochberg false discovery rate); a change is called significant when "
        f"q &lt; {c.s.shift.alpha:g}. Calibration: on synthetic studies made of real lessons and meetings with no "
        "change, this test flagged about 5% of groups or fewer (<code>bench/shift_group.py</code>).</p>"
    )


def _int(v) -> str:
    return f"{int(v):,}" if isinstance(v, (int, float, np.integer)) and not is_missing(v) else "?"


_KEYWORDS = {"keybert": "KeyBERT-inspired", "mmr": "maximal-marginal-relevance", "ctfidf": "c-TF-IDF"}
_UNITS = {"interview": "whole interviews", "turn": "speaker turns", "utterance": "single units"}


def _speaker_test_words(c: ReportContext, p: dict) -> str:
    """The test each speaker pair got, as the shifts table records it (shift.speaker_test may be auto)."""
    words = {
        "permutation": "a permutation test",
        "moderated_t": "a moderated t-test (each speaker's between-unit variance shrunk towards all speakers', "
        "Bonferroni-corrected over the dimensions)",
    }
    has = "shifts" in c.t and "p_method" in c.t["shifts"]
    used = c.t["shifts"]["p_method"].dropna().value_counts() if has else pd.Series(dtype=int)
    if len(used) == 1:
        return words.get(used.index[0], str(used.index[0]))
    if len(used) > 1:
        return (
            f"a permutation test where the units allowed at least {p.get('min_labellings')} distinct labellings, "
            "otherwise "
            + words["moderated_t"]
            + " ("
            + join_and([f"{n} pairs by {str(k).replace('_', ' ')}" for k, n in sorted(used.items())])
            + ")"
        )
    test = p.get("speaker_test", "auto")
    return words.get(test, f"a permutation test or a moderated t-test (chosen per pair: {test})")


def _resample_words(c: ReportContext, p: dict) -> str:
    has = "shifts" in c.t and "resample_unit" in c.t["shifts"]
    units = sorted(set(c.t["shifts"]["resample_unit"].dropna())) if has else []
    if not units:
        units = [p.get("resample_unit", "auto")]
    k = p.get("blocks_per_interview")
    words = {**_UNITS, "block": f"blocks of whole answers ({k} per interview)"}
    named = [words.get(u, "whole interviews where a speaker had two or more per wave, else blocks") for u in units]
    return join_and(named)


def _methods_paragraph(c: ReportContext) -> str:
    """Plain prose for a paper's methods section, from the run's manifest (and, for what each pair
    got, its tables): models and their ids, units, clustering, framework and mapping, tests, versions, seed."""
    m = c.manifest
    st, cfg = m.get("stages", {}), m.get("config", {})
    out = []
    if "segment" in st:
        sc, counts = cfg.get("segment", {}), st["segment"].get("counts", {})
        unit = sc.get("unit", "sentence")
        units = {"turn": "speaker turns", "window": f"windows of {sc.get('window_size')} sentences"}.get(
            unit, "sentences"
        )
        split = (
            ""
            if unit == "turn"
            else " (rule-based sentence splitting)"
            if sc.get("sentence_splitter", "rules") == "rules"
            else f" (sentences split by the spaCy pipeline {sc.get('sentence_splitter')})"
        )
        n_int = f" of {len(c.t['interviews']):,} interviews" if "interviews" in c.t else ""
        excluded = counts.get("excluded", {})
        if "utterances" in c.t:
            u = c.t["utterances"]
            who = f"{u.loc[~u['is_interviewer'], 'speaker_id'].nunique():,} interviewees"
        else:
            who = f"{_int(counts.get('speakers'))} speakers"
        what = {"interviewer": "interviewer units", "backchannel": "back-channels", "annotation": "transcriber notes"}
        left = join_and([f"{_int(n)} {what.get(k, str(k).replace('_', ' '))}" for k, n in sorted(excluded.items())])
        out.append(
            f"The transcripts{n_int} ({who}) were segmented into {units}{split}; "
            f"{_int(counts.get('coded'))} of {_int(counts.get('utterances'))} units were coded"
            + (f", leaving out {left}" if left else "")
            + "."
        )
    if "embed" in st:
        e = st["embed"]
        out.append(
            f"Each coded unit was embedded with the sentence-embedding model {e.get('model')} (model id "
            f"{e.get('model_id')}, {e.get('dim')} dimensions)."
        )
    if "codes" in st:
        k, cc = st["codes"], cfg.get("codes", {})
        method = str(k.get("method", ""))
        if method.startswith("umap+hdbscan"):
            how = (
                f"UMAP ({cc.get('umap_components')} components, {cc.get('umap_neighbors')} neighbours) and HDBSCAN "
                f"(minimum cluster size {k.get('min_cluster_size')})" + (" on a GPU (cuML)" if "GPU" in method else "")
            )
        elif method == "agglomerative":
            cut = cc.get("agglomerative_distance")
            how = f"agglomerative clustering (average linkage, cosine distance threshold {cut})"
        else:
            how = method or "clustering"
        sample = f", fitted on a stratified sample of {_int(k.get('fitted_on'))} units" if k.get("sampled") else ""
        kc = k.get("counts", {})
        out.append(
            f"First-order codes were found by clustering the embeddings with {how} in BERTopic{sample}, each code "
            f"described by {_KEYWORDS.get(cc.get('representation'), 'its')} keywords; this gave "
            f"{_int(kc.get('codes'))} codes, with {_int(kc.get('unassigned'))} units left without a code."
        )
    if "map" in st:
        mp, mc = st["map"], cfg.get("map", {})
        fw, counts = mp.get("framework", {}), mp.get("counts", {})
        dims, concepts = fw.get("dimensions", []), fw.get("concepts", [])
        if mp.get("method") == "classifier":
            how = f"a logistic-regression classifier trained on the framework's texts (C = {mc.get('classifier_c')})"
        else:
            t = mp.get("temperature")
            how = (
                f"their embedding similarity to the framework's texts (the mean of the {mc.get('similarity_top_k')} "
                "most similar texts per concept, a softmax"
                + (f" with temperature {t:.3g} fitted leave-one-out" if isinstance(t, float) else "")
                + ")"
            )
        out.append(
            f"Codes and units were mapped onto the framework “{fw.get('name')}” ({len(dims)} aggregate dimensions: "
            f"{join_and([str(d) for d in dims])}; {len(concepts)} second-order concepts) by {how}; a unit was "
            f"assigned its most probable concept{_map_gates(mc)}. "
            f"{_int(counts.get('codes_mapped'))} of {_int(counts.get('codes'))} codes "
            f"and {_int(counts.get('utterances_mapped'))} of {_int(counts.get('utterances'))} units were mapped."
        )
    if "learn" in st:
        lr = st["learn"]
        out.append(
            f"A classifier trained on the human-coded units ({str(lr.get('level', '')).replace('_', '-')} codes, "
            f"feature set {lr.get('feature_set')}) coded the remaining units."
        )
    if "shift" in st:
        p = st["shift"].get("parameters") or cfg.get("shift", {})
        ci = p.get("ci_level", c.s.shift.ci_level)
        out.append(
            "Each speaker's change between waves was measured as the Jensen-Shannon distance between the "
            f"speaker's dimension profiles in the two waves, with {ci:.0%} bootstrap intervals "
            f"({_int(p.get('bootstrap'))} resamples) and p-values from {_speaker_test_words(c, p)}; resampling and "
            f"permutation ({_int(p.get('permutations'))} permutations) treated {_resample_words(c, p)} as "
            "exchangeable units. p-values were corrected for testing many speakers with the Benjamini-Hochberg "
            f"false discovery rate, and a change was called significant at q < {p.get('alpha', c.s.shift.alpha)}. "
            f"Group changes (groups by {str(p.get('group_by', 'speaker_role')).replace('_', ' ')}, and all speakers) "
            "were estimated as random-effects means of the speakers' changes with Hartung-Knapp-Sidik-Jonkman "
            "intervals, speakers being the unit of analysis, and compared between groups with Welch intervals."
        )
    if "compare" in st:
        cp = st["compare"]
        pc, counts = cp.get("parameters") or cfg.get("compare", {}), cp.get("counts", {})
        coders = counts.get("coders", [])
        out.append(
            f"Agreement with {len(coders)} human coder{'s' if len(coders) != 1 else ''} was measured on "
            f"{_int(counts.get('units'))} units with Krippendorff's α and Cohen's κ, with "
            f"{pc.get('ci_level', 0.95):.0%} bootstrap intervals ({_int(pc.get('bootstrap'))} resamples of "
            f"{pc.get('bootstrap_unit', 'interview')}s)."
        )
    v = m.get("versions", {})
    if v or "seed" in m:
        libs = [
            f"{k} {v[k]}"
            for k in ("sentence-transformers", "bertopic", "umap-learn", "hdbscan", "scikit-learn", "numpy")
            if k in v
        ]
        out.append(
            f"The analysis was run with themeshift {v.get('themeshift', '?')} (Python {v.get('python', '?')}"
            + (f"; {', '.join(libs)}" if libs else "")
            + f") with random seed {m.get('seed', c.s.seed)}."
        )
    return " ".join(out)


def methods_section(c: ReportContext) -> str:
    """Method details, out of the way of the findings: a paragraph to cite, and how each test works."""
    paragraph = _methods_paragraph(c) if c.manifest else ""
    parts = []
    if "shifts" in c.t:
        parts.append("<h3>Per-speaker shifts</h3>" + _shift_method(c))
    if "group_changes" in c.t:
        parts.append("<h3>Group estimates</h3>" + _group_method(c))
    if not paragraph and not parts:
        c.empty.add("methods")
        return "<p>No manifest.json in the run directory: nothing to describe.</p>"
    cite = (
        "<h3>For a methods section</h3><p>Written from this run's <code>manifest.json</code>; check it "
        "against your study design before you use it.</p>"
        f'<blockquote class="citable"><p id="methods-paragraph">{esc(paragraph)}</p></blockquote>'
        if paragraph
        else ""
    )
    return (
        '<details id="methods-details" class="methods"><summary>How the numbers were made, and a paragraph '
        f"for a paper's methods section</summary>{cite}{''.join(parts)}</details>"
    )


def _map_gates(mc: dict) -> str:
    """When the map assigned a unit, in words: the gates the run's [map] settings switched on."""
    similarity, threshold, margin = (
        mc.get("min_similarity"),
        mc.get("utterance_threshold") or 0,
        mc.get("utterance_margin"),
    )
    parts = []
    if similarity is not None and similarity > -1:
        parts.append(f"some framework text was at least {similarity} similar to it (cosine)")
    if threshold > 0:
        parts.append(f"its dimension's probability reached {threshold}")
    if margin is not None and margin > -1:
        parts.append(f"its dimension led the next by {margin}")
    return " when " + " and ".join(parts) if parts else ""
