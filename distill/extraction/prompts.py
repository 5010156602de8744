"""The prompts the LLM teacher sees, one per step, plus the repair prompt.

Every prompt carries machine-readable markers that the loopback stub server
(``distill.bench.stub_server``) reads, so keep them exactly:

- the system message is the shared prefix: the rules common to every step,
  the organ names, ``[report: <N>]`` on its own line and, last, the note
  between a line ``<<<NOTE`` and a line ``NOTE>>>``;
- the user message's first line is ``[diag-distill step: <step>]``, then the
  step's task, for mapping the step-1 findings JSON between ``<<<FINDINGS`` /
  ``FINDINGS>>>`` and the step-2 diagnoses between ``<<<DIAGNOSES`` /
  ``DIAGNOSES>>>``, and the answer shape.

Shared prefix: the system message depends only on the report and the note,
never on the step, so the three calls of a report begin with the same bytes
and an endpoint's automatic prefix cache (DeepSeek, OpenAI, vLLM, llama.cpp)
bills the note once at the full input price. A note over ``MAX_NOTE_CHARS``
is sent in parts or excerpts, so its calls share less.

Long notes: a note up to ``MAX_NOTE_CHARS`` is always sent whole. The mapping
step of a longer note gets the passages around each finding and diagnosis
quote (``mapping_excerpt``), in note order, marked ``[...]`` where text was
left out; the other steps are split into parts of at most ``MAX_NOTE_CHARS``
at paragraph boundaries (``split_note``) and the LLM extractor merges them.

Versions (``PROMPT_VERSION``; a record names the version its teacher was given):

- ``diag-prompts-1``: the three steps and the single-call fallback.
- ``diag-prompts-2``: the shared cacheable prefix (rules, organ names, the note) for every call.
- ``diag-prompts-3``: each diagnosis has a certainty (confirmed, suspected, ruled_out); findings can be
  marked normal; rules for history items, family history, hypotheticals, radiology impressions, pertinent
  negatives and diagnoses of several organs; mapping takes locations only from the finding's own words and
  never links a normal finding or a ruled-out diagnosis.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from distill.extraction.extractor import StepInput
from distill.extraction.normalize import find_quote
from distill.extraction.schemas import STEP_MODELS
from distill.extraction.vocabulary import load_vocabulary

PROMPT_VERSION = "diag-prompts-3"
#: A note up to this many characters goes into every prompt whole (about 6,000 tokens).
MAX_NOTE_CHARS = 24_000
#: Characters kept on each side of a quote when a long note is excerpted for mapping.
EXCERPT_CONTEXT_CHARS = 1_500
#: At most this much of a rejected answer is shown back to the model in a repair prompt.
REPAIR_ANSWER_CHARS = 3_000

STEPS = tuple(STEP_MODELS)

_FINDINGS_SHAPE = '''{"findings": [
  {"quote": "<words copied exactly from the note>",
   "status": "present" | "absent" | "uncertain",
   "kind": "symptom" | "exam" | "test" | "sign",
   "normal": true | false}
]}'''

_ORGANS_SHAPE = '''{"diagnoses": [
  {"organ": "<one organ name from the list, spelled exactly>",
   "diagnosis": "<the physician's diagnosis or assessment, in the note's words>",
   "quote": "<the sentence or phrase of the note that states it, copied exactly>",
   "certainty": "confirmed" | "suspected" | "ruled_out"}
]}'''

_MAPPING_SHAPE = '''{"mappings": [
  {"finding": "<a quote from FINDINGS, copied exactly>",
   "organ": "<an organ from DIAGNOSES, spelled exactly>",
   "diagnosis": "<the diagnosis from DIAGNOSES this finding supports>",
   "locations": ["<an allowed location of that organ that the note names or clearly describes>"],
   "basis": "<the words of the note that link the finding to the organ, copied exactly>",
   "inference": "<one short sentence: why the finding concerns this organ>"}
]}'''

_COMBINED_SHAPE = '''{"findings": [ ...as in step 1... ],
 "diagnoses": [ ...as in step 2... ],
 "mappings": [ ...as in step 3... ]}
where a finding is {"quote": "...", "status": "present" | "absent" | "uncertain", "kind": "symptom" | "exam" | "test" | "sign", "normal": true | false},
a diagnosis is {"organ": "...", "diagnosis": "...", "quote": "...", "certainty": "confirmed" | "suspected" | "ruled_out"},
a mapping is {"finding": "...", "organ": "...", "diagnosis": "...", "locations": ["..."], "basis": "...", "inference": "..."}'''

_COMMON_RULES = """Ground rules:
- Copy every quote character for character from the note: no paraphrase, no spelling fixes, no added words.
  Keep quotes short (a phrase, not a paragraph).
- Only report what the note says. If the note does not support something, leave it out.
- Answer with the JSON object only: no Markdown fences, no comments, no text before or after it."""

_STATUS_RULES = """Status of each finding:
- "present": the note states the patient has it ("complains of chest pain", "BP 160/95").
- "absent": the note denies or rules it out ("denies fever", "no edema", "negative for ...").
- "uncertain": possible, suspected, questionable, or a differential ("possible pneumonia", "rule out MI").
- The same words can be stated in one place and denied in another ("no cough" in the history, "new cough" in
  the course): list each mention with its own status, quoting enough words to tell them apart.
Kind: "symptom" (what the patient reports), "exam" (examination finding), "test" (laboratory, imaging or
other test result), "sign" (any other clinical sign).
Normal: "normal": true for a statement of normal findings ("lungs clear to auscultation", "regular rate and
rhythm", "heart size is normal", "心律齐"), with status "present"; such a finding is never evidence for a
diagnosis. A denied abnormality ("no murmur") is "absent", not normal.
Certainty of each diagnosis:
- "confirmed": the physician states it ("community-acquired pneumonia", "诊断：肺炎").
- "suspected": possible, probable, likely, suspected, "cannot exclude", "rule out ...", a differential
  diagnosis ("possible pneumonia", "考虑肺炎", "肺癌待排").
- "ruled_out": "no evidence of", "negative for", "ruled out", "unlikely", "排除" ("no evidence of pneumonia").
  List a ruled-out diagnosis with this certainty; no finding is ever linked to it.
What is not the patient's present illness:
- Family history ("mother had breast cancer") is neither a finding nor a diagnosis of the patient: leave it out.
- A hypothetical or an instruction ("call if fever", "return for chest pain", "risk of bleeding") is no
  finding: leave it out.
- A history item ("history of MI in 2010", "s/p appendectomy") is a finding or diagnosis only when the note
  treats it as a current problem (in the assessment, or as a finding the note reports now); a past problem
  listed only in the past history is left out.
- A radiology impression ("Right lower lobe pneumonia", "cardiomegaly") is both: list its abnormality as a
  finding (kind "test") and as the reader's diagnosis of that organ."""

_TASKS = {
    "findings": """Task: list the clinical findings in this medical note: symptoms, examination findings, test
results and clinical signs, each quoted from the note with its status, from every part of the note that
reports them (history, review of systems, examination, vital signs, laboratory, imaging, course). Include
pertinent negatives (findings the note says are absent, status "absent") and normal statements (with
"normal": true). Do not list medications, procedures, plans, hypotheticals, history items that are not current
problems, or family history. A diagnosis the note states as an observed condition (an imaging impression, a
stated disease) may also be listed as a finding.""",
    "organs": """Task: list the physician's diagnoses and assessments in this medical note (from the
assessment, impression, diagnosis, discharge diagnosis and plan; in a note without such sections, or a test
report, wherever the physician states them) with the organ each one concerns and its certainty. Use only the
allowed organ names above, spelled exactly as listed. A diagnosis that concerns no listed organ is left out. A
diagnosis that concerns several organs (hepatorenal syndrome; metastatic disease to liver and lung) appears
once per organ, each with the same wording and quote. Include ruled-out diagnoses with certainty "ruled_out".
Never list family history or a diagnosis named only as a risk or hypothetical.""",
    "mapping": """Task: link each finding in FINDINGS to the organ in DIAGNOSES that it is evidence for, and name
the anatomical locations of that organ the note supports. Read the whole note above for this. Choose the
diagnosis a finding supports by clinical knowledge (what the finding is a sign, symptom or result of in that
organ), not by shared words. Locations must come from the allowed list of that organ and from the note's words
about that finding (its own phrase or sentence), never from the diagnosis sentence or another finding; give an
empty list when the finding's words name no location. Never pick a location because it is typical or likely.
Do not link a finding marked normal, a finding with status "absent", or any diagnosis whose certainty is
"ruled_out". A finding the note does not connect to any organ in DIAGNOSES is left out. Copy each finding
exactly as it appears in FINDINGS.""",
    "combined": """Task: do three things for this medical note in one answer.
1. findings: the symptoms, examination findings, test results and clinical signs, quoted from the note, each
   with its status (include pertinent negatives).
2. diagnoses: the physician's diagnoses and assessments, the organ each concerns (organ names taken only from
   the allowed organ names above, spelled exactly) and each one's certainty.
3. mappings: each finding linked to the diagnosis organ it is evidence for, with the anatomical locations of
   that organ the finding's own words name (an empty list when they name none; never guess, never borrow
   them from the diagnosis); no link for normal or absent findings or ruled-out diagnoses.""",
}

_SHAPES = {"findings": _FINDINGS_SHAPE, "organs": _ORGANS_SHAPE, "mapping": _MAPPING_SHAPE,
           "combined": _COMBINED_SHAPE}


# --- vocabulary --------------------------------------------------------------------


def organ_names() -> list[str]:
    """The allowed organ names, spelled as the vocabulary spells them."""
    return list(load_vocabulary().organs)


def organ_locations(organ: str) -> list[str]:
    """The allowed anatomical locations of ``organ`` (empty for an organ the vocabulary does not know)."""
    try:
        return list(load_vocabulary().locations(organ))
    except KeyError:
        return []


@cache
def _organ_list_text() -> str:
    return "\n".join(f"- {name}" for name in organ_names())


def _allowed_locations_text(data: StepInput) -> str:
    vocabulary = load_vocabulary()
    organs: list[str] = []
    for diagnosis in data.organs.diagnoses if data.organs else []:
        organ = vocabulary.match_organ(diagnosis.organ) or diagnosis.organ
        if organ not in organs:
            organs.append(organ)
    lines = []
    for organ in organs:
        locations = organ_locations(organ)
        lines.append(f"- {organ}: {'; '.join(locations) if locations else '(no locations listed: use [])'}")
    return "\n".join(lines) or "(no organs: answer {\"mappings\": []})"


# --- long notes ----------------------------------------------------------------------


def split_note(text: str, limit: int = MAX_NOTE_CHARS) -> list[str]:
    """Split ``text`` into consecutive parts of at most ``limit`` characters, at paragraph or line breaks when
    possible. Joined, the parts give back ``text`` exactly."""
    parts: list[str] = []
    start = 0
    while len(text) - start > limit:
        window = text[start:start + limit]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(". "))
        end = start + (cut + 1 if cut > limit // 2 else limit)
        parts.append(text[start:end])
        start = end
    parts.append(text[start:])
    return parts


def _quote_spans(text: str, quotes: list[str], context: int) -> list[tuple[int, int]]:
    spans = []
    for quote in quotes:
        # The opening words place a long quote well enough, and still match when its tail was reworded.
        found = find_quote(" ".join(quote.split())[:80], text)
        if found is not None:
            spans.append((max(0, found[0] - context), min(len(text), found[1] + context)))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for begin, end in spans:
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged


def mapping_excerpt(text: str, quotes: list[str], limit: int = MAX_NOTE_CHARS,
                    context: int = EXCERPT_CONTEXT_CHARS) -> str:
    """The note for the mapping step: whole up to ``limit`` characters; otherwise the passages around each
    quote (``context`` characters each side, merged, in note order, ``[...]`` between them), at most
    ``limit`` characters. A quote not found (see ``distill.extraction.normalize.find_quote``) contributes no passage."""
    if len(text) <= limit:
        return text
    spans = _quote_spans(text, quotes, context)
    if not spans:
        return split_note(text, limit)[0]
    pieces: list[str] = []
    used = 0
    for begin, end in spans:
        room = limit - used
        if room <= 200:
            break
        piece = text[begin:min(end, begin + room)]
        pieces.append(("[...]\n" if begin > 0 else "") + piece)
        used += len(piece)
    return "\n".join(pieces) + ("\n[...]" if spans[-1][1] < len(text) else "")


# --- messages ------------------------------------------------------------------------


_PREFIX_INTRO = """You extract structured clinical information from one medical note, in steps: the clinical findings,
the physician's diagnoses and the organ each concerns, and the links between them. The rules, the steps and
the note below are the same for every call; the message after the note says which one step to answer now,
with what earlier steps produced. Answer only that step."""

#: The steps described once in the shared prefix. The single-call fallback ("combined") is rare, so its
#: task travels in its own message rather than in every call's prefix.
_PREFIX_STEPS = ("findings", "organs", "mapping")


def _step_text(step: str) -> str:
    return f"Step \"{step}\"\n{_TASKS[step]}\nAnswer with one JSON object of exactly this shape:\n{_SHAPES[step]}"


@cache
def _steps_text() -> str:
    return "\n\n".join(_step_text(step) for step in _PREFIX_STEPS)


@cache
def common_text() -> str:
    """The leading instructions every call of every report shares (built once)."""
    # Never depends on the report: endpoints cache it across every report of a job.
    return "\n\n".join([_PREFIX_INTRO, _COMMON_RULES, _STATUS_RULES, "Allowed organ names:\n" + _organ_list_text(),
                        "The steps:", _steps_text()])


def _prefix(data: StepInput, note: str) -> str:
    # Identical for every call of a report (same note text), so an endpoint's prefix cache bills it once.
    number = getattr(data.report, "number", None)
    return "\n\n".join([
        common_text(), f"[report: {number}]" if number is not None else "[report: unknown]",
        "Medical note:\n<<<NOTE\n" + note.strip("\n") + "\nNOTE>>>",
    ])


def _dump(model: Any) -> str:
    return json.dumps(model.model_dump(mode="json"), ensure_ascii=False) if model is not None else "{}"


def _step_note(step: str, data: StepInput, note_limit: int) -> str:
    if step != "mapping":
        whole = getattr(data.report, "text", None)
        if isinstance(whole, str) and data.text != whole and len(whole) <= note_limit:
            return whole  # the shared prefix holds the whole note; the part is named in the user message
        return data.text
    quotes = [f.quote for f in data.findings.findings] if data.findings else []
    quotes += [d.quote or d.diagnosis for d in data.organs.diagnoses] if data.organs else []
    return mapping_excerpt(data.text, quotes, limit=note_limit, context=min(EXCERPT_CONTEXT_CHARS, note_limit // 4))


def _user(step: str, data: StepInput, note: str) -> str:
    lines = [f"[diag-distill step: {step}]"]
    if step != "mapping" and note is not data.text:
        lines += [f"[note part: {data.part or 'excerpt'}]",
                  "For this call, read only this part of the note above (quotes still come from the note):",
                  "<<<PART", data.text.strip("\n"), "PART>>>"]
    if step in _PREFIX_STEPS:
        lines.append(f"Answer step \"{step}\" now, as described above.")
    else:
        lines += ["Answer this step now, instead of the three steps above:", _step_text(step)]
    if step == "mapping":
        lines += ["", "Findings from step 1:", "<<<FINDINGS", _dump(data.findings), "FINDINGS>>>",
                  "", "Diagnoses and organs from step 2:", "<<<DIAGNOSES", _dump(data.organs), "DIAGNOSES>>>",
                  "", "Allowed anatomical locations of these organs:", _allowed_locations_text(data)]
        if note is not data.text:
            lines += ["", "The note is long: the note above holds the passages around the findings and diagnoses."]
    lines += ["", f"Answer with the JSON object only, in the shape given for step \"{step}\"."]
    return "\n".join(lines)


def build_messages(step: str, data: StepInput, note_limit: int = MAX_NOTE_CHARS) -> list[dict[str, str]]:
    """The chat messages for one step: a system message shared byte for byte by every step of a report
    (rules, organ names, report number, the note) and a user message (the step's task, earlier outputs for
    mapping, the answer shape). ``step`` is one of ``STEPS``. ``note_limit`` is the most note text one
    prompt may hold (smaller for an endpoint with a small context window)."""
    if step not in _TASKS:
        raise ValueError(f"unknown step {step!r}; expected one of {', '.join(STEPS)}")
    note = _step_note(step, data, note_limit)
    return [{"role": "system", "content": _prefix(data, note)}, {"role": "user", "content": _user(step, data, note)}]


def build_repair_messages(step: str, data: StepInput, previous_answer: str, problem: str,
                          note_limit: int = MAX_NOTE_CHARS) -> list[dict[str, str]]:
    """The step's messages followed by the rejected answer and a request to fix exactly ``problem``."""
    shown = previous_answer
    if len(shown) > REPAIR_ANSWER_CHARS:
        shown = shown[:REPAIR_ANSWER_CHARS] + "\n[... rest of your answer left out ...]"
    advice = "Answer again with the complete JSON object only, in exactly the shape given."
    if "truncated" in problem or "max_tokens" in problem:
        advice += (" Your answer was too long and got cut off: keep quotes short, list each item once, "
                   "and leave \"inference\" and \"basis\" brief.")
    elif "schema" in problem:
        advice += " Use exactly the field names and allowed values shown; every required field must be present."
    else:
        advice += " Start with { and end with }; write nothing else."
    return [
        *build_messages(step, data, note_limit),
        {"role": "assistant", "content": shown or "(empty answer)"},
        {"role": "user", "content": f"Your answer could not be used: {problem}\n{advice}"},
    ]


# --- instruction for the student model -----------------------------------------------

_INSTRUCTION = """You read one medical note and extract, as training data for clinical structuring, every
clinical finding (symptom, examination finding, test result, clinical sign) with its status, and link it to
the physician's diagnoses, the organ each concerns and the anatomical locations the note supports.
Rules:
- "s_symptom" is copied exactly from the note. "status" is "present", "absent" (denied or ruled out) or
  "uncertain" (possible, suspected, differential). "normal" is true for a statement of normal findings
  ("lungs clear"), which has an empty "U_unit_set".
- "organName" is one of the allowed organ names below, spelled exactly. "anatomicalLocations" holds only
  locations of that organ that the note names or clearly describes; it is empty when the note names none.
  Never guess or pad.
- "d_diagnosis" is the physician's diagnosis or assessment the finding supports (never one the note rules
  out); "d_certainty" is "confirmed" or "suspected"; "doctorsDiagnosisAndJudgment" quotes the note's words for
  it; "medicalInference" says briefly why the finding concerns that organ.
- A finding with no diagnosis or organ in the note has an empty "U_unit_set".
Answer with a JSON array only, each element of this shape:
{"s_symptom": "...", "status": "present", "U_unit_set": [{"u_unit": {"d_diagnosis": "...",
 "o_organ": {"organName": "...", "anatomicalLocations": ["..."]},
 "b_textual_basis": {"doctorsDiagnosisAndJudgment": "...", "medicalInference": "..."},
 "d_certainty": "confirmed"}}], "normal": false}
Allowed organ names:
"""


@cache
def instruction_text() -> str:
    """The single system instruction for the student model (versioned by ``PROMPT_VERSION``)."""
    return f"[{PROMPT_VERSION}]\n" + _INSTRUCTION + "; ".join(organ_names())


def __getattr__(name: str) -> str:
    # INSTRUCTION_TEXT needs the vocabulary: build it on first use, not at import.
    if name == "INSTRUCTION_TEXT":
        return instruction_text()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
