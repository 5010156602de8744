"""Finding rules of the offline teacher beyond single lexicon terms.

- Functional items of a Chinese history (精神, 食欲, 睡眠, 大便, 小便, 体重): the item is the finding,
  and the words after it in its clause say how it is: a normal descriptor (可, 尚可, 正常, 如常) marks
  it normal; a denied change (体重无明显变化) makes it absent.
- Vital signs and common laboratory values stated with their number ("BP 160/95", "pulse 72",
  "WBC 15.2"): a sign or test result each, normal inside the adult resting or reference range.
- Stated conditions on a short line of their own ("Carpal tunnel syndrome.", "Left acoustic neuroma."),
  as diagnosis lists and operative notes write them: the line is a finding when it names a disease
  (by its ending or its head word) and reads as a label, not as narrative.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from distill.extraction.context import Context
from distill.extraction.lexicon import CompiledLexicon

#: A condition line is at most this long (characters).
CONDITION_LINE = 80

_CLAUSE_END = r"(?=[，,。；;、\s]|$)"
_NORMAL_DESCRIPTOR = re.compile(r"[^，,。；;]{0,8}?(?:尚可|可|正常|如常|无殊|无异常|良好|好|佳|平稳|调)" + _CLAUSE_END)
_DENIED_CHANGE = re.compile(r"[^，,。；;]{0,6}?(?:无|未见|未)(?:明显|异常|显著|明显异常)?(?:变化|改变|增减|下降|减轻|减少|增加)")
_LIST_NUMBER = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s*")
_TRAILING = re.compile(r"[\s,;:.]+$")
# A past problem is history, not a finding of this visit.
_HISTORY_ITEM = re.compile(r"\s*(?:history of|h/o|status post|s/p|prior|previous|past)\b", re.IGNORECASE)
# Words that make a line narrative rather than a label.
_NARRATIVE = re.compile(
    r"(?<![A-Za-z])(?:was|were|is|are|has|have|had|been|will|can|could|may|might|would|should|did|does|we|I|he|"
    r"she|they|her|his|patient|underwent|showed|shows|revealed|indicated|performed|placed|obtained|taken|"
    r"used|given|noted|seen|the|this|that|with the|after|then|please|see|received|receiving|presented|started|"
    r"treated|admitted|discharged|referred|followed|dr|md|department|division|clinic)(?![A-Za-z])",
    re.IGNORECASE,
)
# Head words of a stated condition that no disease ending catches.
_CONDITION_HEAD = re.compile(
    r"(?<![A-Za-z])(?:tear|tears|rupture|dislocation|subluxation|instability|defect|deformity|foreign body|"
    r"ganglion|miscarriage|pregnancy|lesion|lesions|mass|masses|contracture|nonunion|malunion|separation|"
    r"entropion|ectropion|chalasis|chalasia|dermatochalasis|sprain|strain|laceration|wound|burn|bleeding|"
    r"pain|fever|weakness|anomaly|malformation|prominence|spur|spurs|bunion|hammertoe|valgus|varus)"
    r"(?![A-Za-z])",
    re.IGNORECASE,
)


def read_function(text: str, end: int) -> tuple[bool, bool]:
    """``(normal, change_denied)`` for a functional item ending at ``end``: what its clause says of it."""
    if _DENIED_CHANGE.match(text, end):
        return False, True
    return _NORMAL_DESCRIPTOR.match(text, end) is not None, False


def condition_lines(context: Context, lex: CompiledLexicon, taken: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Spans of short English lines that state a condition and hold no lexicon finding already."""
    text = context.text
    seen: set[tuple[int, int]] = set()
    for word in _condition_words(text, lex):
        left, right = context.sentence(word.start(), word.end())
        if (left, right) in seen:
            continue
        seen.add((left, right))
        if right - left > CONDITION_LINE or any(left < end and start < right for start, end in taken):
            continue
        line = text[left:right]
        if not line.isascii() or _NARRATIVE.search(line) or ":" in line:
            continue
        number = _LIST_NUMBER.match(line)
        start = left + (number.end() if number else 0)
        if _HISTORY_ITEM.match(text, start):
            continue
        trailing = _TRAILING.search(text, start, right)
        end = trailing.start() if trailing else right
        if end - start >= 4:
            yield start, end


def _condition_words(text: str, lex: CompiledLexicon) -> Iterator[re.Match[str]]:
    for word in lex.disease_word.finditer(text):
        if word.group(0).isascii():
            yield word
    yield from _CONDITION_HEAD.finditer(text)


# Vital signs with their value: a clinical sign each, normal when inside the adult resting range.
_NUMBER = r"(\d{2,3}(?:\.\d)?)"
_VITALS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("bp", re.compile(r"(?<![A-Za-z])(?:blood pressure|BP)(?:\s+(?:is|was|of))?[:：\s]+(\d{2,3})\s*/\s*(\d{2,3})",
                      re.IGNORECASE)),
    ("pulse", re.compile(r"(?<![A-Za-z])(?:pulse|heart rate|HR|(?-i:P))(?:\s+(?:is|was|of))?[:：\s]+" + _NUMBER
                         + r"(?![\d/])", re.IGNORECASE)),
    ("rr", re.compile(r"(?<![A-Za-z])(?:respiratory rate|respirations|RR|(?-i:R))(?:\s+(?:is|was|of))?[:：\s]+" + _NUMBER
                      + r"(?![\d/])", re.IGNORECASE)),
    ("temp", re.compile(r"(?<![A-Za-z])(?:temperature|temp|(?-i:T))(?:\s+(?:is|was|of))?[:：\s]+" + _NUMBER
                        + r"(?![\d/])", re.IGNORECASE)),
    ("spo2", re.compile(r"(?<![A-Za-z])(?:oxygen saturation|O2 sat(?:uration)?|SpO2|sat(?:uration)?)"
                        r"(?:\s+(?:is|was|of))?[:：\s]+" + _NUMBER + r"\s*%", re.IGNORECASE)),
)


def _normal_vital(kind: str, values: tuple[float, ...]) -> bool:
    if kind == "bp":
        return 90 <= values[0] < 140 and 60 <= values[1] < 90
    if kind == "pulse":
        return 60 <= values[0] <= 100
    if kind == "rr":
        return 12 <= values[0] <= 20
    if kind == "temp":
        # Celsius or Fahrenheit, told apart by the value.
        return 36.0 <= values[0] < 38.0 if values[0] < 45 else 96.8 <= values[0] < 100.4
    return values[0] >= 95


def vital_signs(text: str) -> Iterator[tuple[int, int, bool]]:
    """``(start, end, normal)`` of each vital sign stated with a plausible value ("BP 160/95", "pulse 72")."""
    for kind, pattern in _VITALS:
        for found in pattern.finditer(text):
            values = tuple(float(v) for v in found.groups())
            if kind == "temp" and not (34 <= values[0] <= 43 or 93 <= values[0] <= 110):
                continue
            if kind in ("pulse", "rr") and not 4 <= values[0] <= 250:
                continue
            yield found.start(), found.end(), _normal_vital(kind, values)


# Common laboratory values and the adult reference range of each (conventional US units).
_LAB_RANGES: tuple[tuple[str, float, float], ...] = (
    (r"white blood cell count|white count|WBC", 4.0, 11.0),
    (r"hemoglobin|(?-i:Hgb|Hb)", 12.0, 17.5),
    (r"platelets|platelet count|(?-i:PLT)", 150.0, 450.0),
    (r"sodium|(?-i:Na)", 135.0, 145.0),
    (r"potassium|(?-i:K)", 3.5, 5.1),
    (r"creatinine|(?-i:Cr)", 0.5, 1.3),
    (r"BUN|blood urea nitrogen", 7.0, 25.0),
    (r"glucose|blood sugar", 70.0, 140.0),
)
_LABS = tuple(
    (re.compile(rf"(?<![A-Za-z])(?:{names})(?:\s+(?:is|was|of|level))?[:：\s]+(\d{{1,3}}(?:,\d{{3}})?(?:\.\d+)?)"
                r"(?![\d/]|\.\d)", re.IGNORECASE), low, high)
    for names, low, high in _LAB_RANGES
)


def lab_values(text: str) -> Iterator[tuple[int, int, bool]]:
    """``(start, end, normal)`` of each common laboratory value stated with its number ("WBC 15.2")."""
    for pattern, low, high in _LABS:
        for found in pattern.finditer(text):
            value = float(found.group(1).replace(",", ""))
            if high >= 150 and value >= 1000:  # a platelet count written in full (250,000)
                value /= 1000
            yield found.start(), found.end(), low <= value <= high
