"""The offline teacher: a deterministic rule-based ``Extractor`` (``provider: local``).

It needs no network and no key, so a fresh machine runs the whole job. Findings
and diagnoses come from the lexicons of ``distill.extraction.lexicon``; each gets a status
from context cues in the NegEx/ConText tradition (a cue reaches from itself to
the end of its sentence, or to a scope-ending word such as "but"); organs and
locations come only from the organ vocabulary and the words of the note.

Every quote and diagnosis is an exact substring of the text the step saw; the
same input always gives the same output.
"""

from __future__ import annotations

import re
import time
from typing import cast

from pydantic import BaseModel

from distill.core.errors import ReportError
from distill.core.teacher_id import OFFLINE_TEACHER_VERSION
from distill.extraction.context import Context, extend_left
from distill.extraction.extractor import CallRecord, StepInput, StepResult, TeacherInfo
from distill.extraction.finding_rules import condition_lines, lab_values, read_function, vital_signs
from distill.extraction.lexicon import Hit, Matcher, Term, compiled_lexicon, is_latin, term_key
from distill.extraction.schemas import (
    STEP_MODELS,
    Certainty,
    CombinedOutput,
    Finding,
    FindingKind,
    FindingsOutput,
    Mapping,
    MappingOutput,
    OrganDiagnosis,
    OrgansOutput,
)
from distill.extraction.vocabulary import Vocabulary, load_vocabulary

TEACHER_VERSION = OFFLINE_TEACHER_VERSION  # the offline teacher's "model" (distill.core.teacher_id)
STEPS = tuple(STEP_MODELS)
MAX_FINDINGS = 40
MAX_DIAGNOSES = 30
MAX_MAPPINGS = 80
# A line this short that holds a disease word is taken whole as a diagnosis.
SHORT_LINE = 80
# A Chinese sentence with one of these tells what happened (就诊, 行…检查, 提示), not what the diagnosis is.
_ZH_NARRATIVE = re.compile(r"就诊|入院|出院|提示|检查|行|予|给予|出现|发现|治疗|术后|患者|[\u3400-\u9fff]{31,}")

# A stated condition line ("Carpal tunnel syndrome."): a finding of no particular organ.
_CONDITION = Term("condition line", "dx", ())
_VITAL = Term("vital sign", "sign", ())
_VITAL_NORMAL = Term("normal vital sign", "sign", ())
_LAB = Term("laboratory value", "test", ())
_LAB_NORMAL = Term("normal laboratory value", "test", ())
_MEASURED = (_VITAL, _VITAL_NORMAL, _LAB, _LAB_NORMAL)
_RULE_TERMS = (_CONDITION, *_MEASURED)
# A symptom, sign or lesion "to be investigated" (便血待查, 占位待查) is present: its cause is what is sought.
# Only a named disease so worded is uncertain.
_WORKUP_CUES = frozenset({"待查", "待诊"})
_OBSERVED = frozenset({"symptom", "exam", "sign", "function"})
_KIND_OF_CATEGORY = {"dx": "sign", "normal": "exam", "function": "symptom"}
_ROLE_OF_KIND = {"symptom": "symptom of", "sign": "sign of", "exam": "examination finding in", "test": "test result in"}

# A sentence with one of these is narrative, not a diagnosis line.
_NARRATIVE = re.compile(
    r"(?<![A-Za-z])(?:was|were|is|are|has|have|had|been|will|can|could|may|might|would|should|did|does|we|I|he|"
    r"she|they|her|his|patient|underwent|showed|shows|revealed|indicated)(?![A-Za-z])"
)
_CJK_ITEM = re.compile(r"[，,、；;：:]")
_AFTER_CVA = re.compile(r"[^\S\n]*(?:-|/)?[^\S\n]*tender", re.IGNORECASE)


class LocalTeacher:
    """The built-in offline ``Extractor``: rules and lexicons, no network, deterministic."""

    def __init__(self, endpoint_name: str = "local", vocabulary: Vocabulary | None = None) -> None:
        self.info = TeacherInfo(kind="local", name=endpoint_name, model=TEACHER_VERSION)
        self.vocabulary = vocabulary if vocabulary is not None else load_vocabulary()
        self._lex = compiled_lexicon()
        self._organ_of_key: dict[str, str | None] = {}

    def run(self, step: str, data: StepInput) -> StepResult:
        """Answer one step; the single ``CallRecord`` carries the measured time."""
        started = time.perf_counter()
        output: BaseModel
        if step == "findings":
            output = FindingsOutput(findings=self.findings(data.text))
        elif step == "organs":
            output = OrgansOutput(diagnoses=self.diagnoses(data.text))
        elif step == "mapping":
            findings = data.findings.findings if data.findings is not None else self.findings(data.text)
            diagnoses = data.organs.diagnoses if data.organs is not None else self.diagnoses(data.text)
            output = MappingOutput(mappings=self.mappings(findings, diagnoses, _note_text(data)))
        elif step == "combined":
            context = Context(data.text, self._lex.cues)
            findings = self._findings(context)
            diagnoses = self._diagnoses(context)
            note = _note_text(data)
            # Sentences do not depend on the cues, so the mapping step can reuse the same context.
            mappings = self._mappings(findings, diagnoses,
                                      context if note == data.text else Context(note, self._lex.cues))
            output = CombinedOutput(findings=findings, diagnoses=diagnoses, mappings=mappings)
        else:
            raise ReportError(f"the offline teacher has no step {step!r}; use one of {', '.join(STEPS)}")
        call = CallRecord(step=step, attempt=1, latency_s=round(time.perf_counter() - started, 6), status="ok")
        return StepResult(output=output, calls=[call])

    def close(self) -> None:
        """Nothing to release; present for the ``Extractor`` protocol."""

    # --- step 1 ---------------------------------------------------------------

    def findings(self, text: str) -> list[Finding]:
        """Findings of ``text`` with their status, in order of first mention, deduplicated: lexicon terms,
        stated condition lines, vital signs and laboratory values (see ``finding_rules``)."""
        return self._findings(Context(text, self._lex.cues))

    def _findings(self, context: Context) -> list[Finding]:
        lex, text = self._lex, context.text
        found: list[Finding] = []
        seen: set[tuple[str, str]] = set()
        hits = self._finding_hits(text)
        # Normal statements and functional items say how something is: they are no item of a bare list.
        context.mark_terms([(hit.start, hit.end) for hit in hits
                            if hit.term.category not in ("skip", "normal", "function")])
        for hit in sorted(hits + self._rule_hits(context, hits), key=lambda h: h.start):
            category = hit.term.category
            if category == "skip":
                continue
            status = context.status(hit.start, hit.end)
            if status == "skip":
                continue
            if hit.term in _MEASURED:
                status = "present"  # a measured value is stated, whatever cue a neighbour has
            if status == "uncertain" and category in _OBSERVED and _awaits_workup(context, hit):
                status = "present"  # 便血待查: the bleeding is there, its cause is being sought
            normal = category == "normal" or hit.term is _VITAL_NORMAL or hit.term is _LAB_NORMAL
            if category == "function":
                normal, change_denied = read_function(text, hit.end)
                status = "absent" if change_denied else status
            start = hit.start if hit.term in _RULE_TERMS else extend_left(text, hit.start, lex.modifiers_en,
                                                                           lex.modifiers_zh)
            quote = text[start:hit.end].strip()
            key = (term_key(quote), status)
            if key in seen:
                continue
            seen.add(key)
            kind = _KIND_OF_CATEGORY.get(category, category)
            found.append(Finding(quote=quote, status=status, kind=cast(FindingKind, kind), normal=normal))
            if len(found) >= MAX_FINDINGS:
                break
        return found

    def _rule_hits(self, context: Context, hits: list[Hit]) -> list[Hit]:
        """Condition lines, vital signs and laboratory values where no lexicon term already is."""
        taken = [(hit.start, hit.end) for hit in hits]
        found = [Hit(start, end, _CONDITION) for start, end in condition_lines(context, self._lex, taken)]
        text = context.text
        measured = [(start, end, _VITAL_NORMAL if normal else _VITAL) for start, end, normal in vital_signs(text)]
        measured += [(start, end, _LAB_NORMAL if normal else _LAB) for start, end, normal in lab_values(text)]
        for start, end, term in sorted(measured, key=lambda item: (item[0], -item[1])):
            if not any(start < b and a < end for a, b in taken):
                taken.append((start, end))
                found.append(Hit(start, end, term))
        return found

    def _finding_hits(self, text: str) -> list[Hit]:
        """Finding terms, and the diseases a note states (an operative note's "squamous cell carcinoma",
        a history's 肺炎): a stated condition is itself a clinical finding of the patient."""
        hits = _yield_to_longer(self._lex.findings, text)
        for hit in self._lex.diagnoses.find(text):
            if hit.term.text == "CVA" and _AFTER_CVA.match(text, hit.end):
                continue
            overlapping = [h for h in hits if hit.start < h.end and h.start < hit.end]
            # A named disease holds a generic lesion word (肝癌 holds 癌): the disease is the finding.
            if all(hit.start <= h.start and h.end <= hit.end and h.end - h.start < hit.end - hit.start
                   for h in overlapping):
                hits = [h for h in hits if h not in overlapping] + [hit]
        return sorted(hits, key=lambda h: h.start)

    # --- step 2 ---------------------------------------------------------------

    def diagnoses(self, text: str) -> list[OrganDiagnosis]:
        """Diagnoses of ``text``, each with its vocabulary organ, sentence and certainty.

        A named diagnosis the note rules out is kept as ``ruled_out`` (so no finding is linked to
        it); test abnormalities and unnamed diagnosis lines are kept only when stated or suspected.
        """
        return self._diagnoses(Context(text, self._lex.cues))

    def _diagnoses(self, context: Context) -> list[OrganDiagnosis]:
        lex, text = self._lex, context.text
        found: list[tuple[int, OrganDiagnosis]] = []
        seen: set[tuple[str, str, str]] = set()
        covered: set[tuple[int, int]] = set()

        def add(position: int, organ: str, diagnosis: str, quote: str, certainty: Certainty) -> None:
            key = (organ, term_key(diagnosis), certainty)
            if key not in seen:
                seen.add(key)
                found.append((position, OrganDiagnosis(organ=organ, diagnosis=diagnosis, quote=quote,
                                                       certainty=certainty)))

        for hit in lex.diagnoses.find(text):
            if hit.term.text == "CVA" and _AFTER_CVA.match(text, hit.end):
                continue  # costovertebral angle tenderness, not a stroke
            certainty = context.certainty(hit.start, hit.end)
            if certainty is None:
                continue
            start, end = self._diagnosis_span(text, hit)
            quote = context.quote(start, end)
            covered.add(context.sentence(hit.start, hit.end))
            for key in hit.term.organs:
                organ = self.resolve_organ(key)
                if organ is not None:
                    add(hit.start, organ, text[start:end].strip(), quote, certainty)
        # A test or imaging abnormality of one organ ("cardiomegaly", "tortuous aorta") is the reader's
        # assessment of that organ: radiology impressions are findings and diagnoses at once.
        for hit in lex.findings.find(text):
            if hit.term.category != "test" or len(hit.term.organs) != 1:
                continue
            certainty = context.certainty(hit.start, hit.end)
            if certainty is None or certainty == "ruled_out":
                continue
            organ = self.resolve_organ(hit.term.organs[0])
            if organ is not None:
                start = extend_left(text, hit.start, lex.modifiers_en, lex.modifiers_zh)
                add(hit.start, organ, text[start:hit.end].strip(), context.quote(start, hit.end), certainty)
        # A diagnosis line the lexicon does not know: trust only organs it names itself.
        for word in lex.disease_word.finditer(text):
            sentence = context.sentence(word.start(), word.end())
            certainty = context.certainty(word.start(), word.end())
            if sentence in covered or certainty is None or certainty == "ruled_out":
                continue
            covered.add(sentence)
            phrase = text[sentence[0]:sentence[1]].strip()
            if len(phrase) > SHORT_LINE or _NARRATIVE.search(phrase) or _ZH_NARRATIVE.search(phrase):
                continue
            for organ in self.vocabulary.organs_in_text(phrase):
                add(word.start(), organ, phrase, phrase, certainty)
        found.sort(key=lambda item: item[0])
        return [diagnosis for _, diagnosis in found[:MAX_DIAGNOSES]]

    def _diagnosis_span(self, text: str, hit: Hit) -> tuple[int, int]:
        lex = self._lex
        start = extend_left(text, hit.start, lex.dx_modifiers_en, lex.dx_modifiers_zh)
        tail = lex.dx_tail_en.match(text, hit.end) if is_latin(hit.term.text) else None
        return start, tail.end() if tail else hit.end

    def resolve_organ(self, key: str) -> str | None:
        """The vocabulary organ a lexicon organ key (``heart``) names, or ``None``."""
        if key not in self._organ_of_key:
            self._organ_of_key[key] = self.vocabulary.match_organ(key)
        return self._organ_of_key[key]

    # --- step 3 ---------------------------------------------------------------

    def mappings(self, findings: list[Finding], diagnoses: list[OrganDiagnosis], note: str) -> list[Mapping]:
        """Each finding linked to the diagnosed organs it is a recognised sign of, or that it names.

        Only organs of ``diagnoses`` are used. Locations are those the finding's
        sentence in ``note`` names, or else those the diagnosis names; never guessed.
        """
        return self._mappings(findings, diagnoses, Context(note, self._lex.cues))

    def _mappings(self, findings: list[Finding], diagnoses: list[OrganDiagnosis], context: Context) -> list[Mapping]:
        diagnosed: dict[str, list[OrganDiagnosis]] = {}
        for diagnosis in diagnoses:
            organ = self._canonical(diagnosis.organ)
            # A ruled-out diagnosis is evidence of nothing: no finding is linked to it.
            if organ is not None and diagnosis.certainty != "ruled_out":
                diagnosed.setdefault(organ, []).append(diagnosis)
        out: list[Mapping] = []
        for finding in findings:
            if finding.status == "absent" or finding.normal:
                continue
            for organ, how in self._organs_of_finding(finding.quote):
                if organ not in diagnosed:
                    continue
                diagnosis = self._supported(finding.quote, diagnosed[organ])
                basis = diagnosis.quote or diagnosis.diagnosis
                # Only where the finding itself is said: a diagnosis elsewhere lends it no location.
                locations = self.vocabulary.locations_in_text(organ, _near(context, finding))
                if how == "lexicon":
                    role = _ROLE_OF_KIND.get(finding.kind, "sign of")
                    inference = f"finding '{finding.quote}' is a recognised {role} {diagnosis.diagnosis}"
                else:
                    inference = (f"finding '{finding.quote}' names a part or condition of the {organ}, "
                                 f"which '{diagnosis.diagnosis}' concerns")
                out.append(Mapping(
                    finding=finding.quote, organ=organ, diagnosis=diagnosis.diagnosis,
                    locations=locations,
                    basis=basis[:1000], inference=inference[:1000],
                ))
                if len(out) >= MAX_MAPPINGS:
                    return out
        return out

    def _supported(self, quote: str, diagnoses: list[OrganDiagnosis]) -> OrganDiagnosis:
        """Which diagnosis of one organ a finding supports: the one that is the finding itself (the same
        lexicon condition: "mild cardiomegaly" and "cardiomegaly"), else the first stated one, else the first."""
        conditions = self._conditions(quote)
        for diagnosis in diagnoses:
            if conditions & self._conditions(diagnosis.diagnosis):
                return diagnosis
        return next((d for d in diagnoses if d.certainty == "confirmed"), diagnoses[0])

    def _conditions(self, text: str) -> set[str]:
        """The lexicon conditions (findings and diagnoses) a text names."""
        hits = self._lex.findings.find(text) + self._lex.diagnoses.find(text)
        return {term_key(hit.term.text) for hit in hits if hit.term.category not in ("skip", "normal")}

    def _organs_of_finding(self, quote: str) -> list[tuple[str, str]]:
        organs: dict[str, str] = {}
        for hit in self._lex.findings.find(quote):
            for key in hit.term.organs:
                organ = self.resolve_organ(key)
                if organ is not None:
                    organs.setdefault(organ, "lexicon")
        for organ in self.vocabulary.organs_in_text(quote):
            organs.setdefault(organ, "named")
        return list(organs.items())

    def _canonical(self, organ: str) -> str | None:
        if organ in self.vocabulary.organs:
            return organ
        return self.vocabulary.match_organ(organ)


_ZH_NEGATION_HEADS = frozenset("无未不")


def _yield_to_longer(matcher: Matcher, text: str) -> list[Hit]:
    """The matcher's hits, where a Chinese term that starts with a negation character gives way to a
    longer term right after that character: 无尿频 is 无 + 尿频 (no frequency), not 无尿 (anuria) + 频."""
    out: list[Hit] = []
    for hit in matcher.find(text):
        if out and hit.start < out[-1].end:
            continue
        if hit.term.text[:1] in _ZH_NEGATION_HEADS and not is_latin(hit.term.text):
            after = hit.start + 1
            inner = matcher.find(text[after:after + 20])
            if inner and inner[0].start == 0 and after + inner[0].end > hit.end:
                hit = Hit(after, after + inner[0].end, inner[0].term)
        out.append(hit)
    return out


def _awaits_workup(context: Context, hit: Hit) -> bool:
    cue = context.cue(hit.start, hit.end)
    return cue is not None and cue.term.text in _WORKUP_CUES


def _note_text(data: StepInput) -> str:
    text = getattr(data.report, "text", None)
    return text if isinstance(text, str) else data.text


def _near(context: Context, finding: Finding) -> str:
    """The sentence where the finding is said: the first occurrence of its quote (any case and spacing) that
    has its status ("cough" stated, not the "no cough" before it), else the first; the quote when not found."""
    words = finding.quote.split()
    if not words:
        return finding.quote
    pattern = re.compile(r"\s+".join(map(re.escape, words)), re.IGNORECASE)
    spans = [m.span() for m in pattern.finditer(context.text)]
    if not spans:
        return finding.quote
    same = [span for span in spans if context.status(*span) == finding.status]
    start, end = (same or spans)[0]
    left, right = context.sentence(start, end)
    if not is_latin(finding.quote):
        # A Chinese sentence lists many findings (直乙交界腺癌、结肠多发息肉): a site belongs to its own item.
        before = max((m.end() for m in _CJK_ITEM.finditer(context.text, left, start)), default=left)
        after = _CJK_ITEM.search(context.text, end, right)
        left, right = before, after.start() if after else right
    return context.text[left:right]
