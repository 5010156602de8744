from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distill.core.errors import ConfigError
from distill.extraction.vocabulary import Vocabulary, load_vocabulary, phrase_key

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REFERENCE = SHARED / "reference" / "organ_anatomy_reference.json"
NOTES = SHARED / "data" / "mtsamples_dev"

HEART = "Heart (Cor)"
LIVER = "Liver (Hepar)"
KIDNEY = "Kidney (Ren)"
LUNG = "Lung (Pulmo)"
ARTERY = "Artery (Arteria)"
ADRENAL = "Adrenal gland (Suprarenal gland)"


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return load_vocabulary()


def test_loads_55_unique_organ_names(vocab: Vocabulary) -> None:
    assert len(vocab.organs) == 55
    assert len(set(vocab.organs)) == 55
    assert "Vein (Vena)" in vocab.organs
    assert vocab.version


def test_organ_names_are_the_reference_names_spelled_exactly(vocab: Vocabulary) -> None:
    if not REFERENCE.is_file():
        pytest.skip(f"reference vocabulary not present at {REFERENCE}")
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    assert list(vocab.organs) == reference["allowed_organs"]


def test_load_is_cached() -> None:
    assert load_vocabulary() is load_vocabulary()


def test_every_organ_has_a_location_list(vocab: Vocabulary) -> None:
    empty = [organ for organ in vocab.organs if not vocab.locations(organ)]
    assert empty == []


@pytest.mark.parametrize(
    ("organ", "location"),
    [
        pytest.param("Cerebellum", "Vermis", id="cerebellum"),
        pytest.param("Brainstem", "Pons", id="brainstem"),
        pytest.param("Diencephalon", "Thalamus", id="diencephalon"),
        pytest.param("Spinal cord (Medulla spinalis)", "Conus Medullaris", id="spinal-cord"),
    ],
)
def test_central_nervous_organs_have_their_own_locations(vocab: Vocabulary, organ: str, location: str) -> None:
    assert location in vocab.locations(organ)


@pytest.mark.parametrize(
    ("organ", "not_a_location"),
    [
        pytest.param("Esophagus", "Esophageal Varices", id="disease"),
        pytest.param("Stomach (Gaster)", "Parietal Cells", id="cell-type"),
        pytest.param("Pituitary gland (Hypophysis)", "Pituitary Hormones", id="hormone"),
        pytest.param("Skin (Cutis)", "Melanocytes", id="skin-cells"),
        pytest.param("Testis", "Epididymis", id="another-organ"),
        pytest.param("Brain", "Spinal cord (Medulla spinalis)", id="spinal-cord-not-brain"),
    ],
)
def test_non_anatomy_locations_are_gone(vocab: Vocabulary, organ: str, not_a_location: str) -> None:
    assert not_a_location not in vocab.locations(organ)
    assert vocab.match_location(organ, not_a_location) is None


@pytest.mark.parametrize(
    ("name", "organ"),
    [
        pytest.param("Heart (Cor)", HEART, id="exact"),
        pytest.param("  heart(COR) ", HEART, id="case-and-space"),
        pytest.param("Heart", HEART, id="head"),
        pytest.param("the lungs", LUNG, id="head-plural-article"),
        pytest.param("Hepar", LIVER, id="latin"),
        pytest.param("Ren", KIDNEY, id="latin-ren-as-whole-name"),
        pytest.param("Vena (Vena)", "Vein (Vena)", id="legacy-vena"),
        pytest.param("Oral cavity", "Mouth (Oral cavity)", id="parenthetical-alias"),
        pytest.param("renal", KIDNEY, id="adjective"),
        pytest.param("cardiac muscle", HEART, id="keyword-in-name"),
        pytest.param("Pulmonary artery", ARTERY, id="longer-keyword-wins"),
        pytest.param("pulmonary valve", HEART, id="pulmonary-valve"),
        pytest.param("Thyroid cartilage", "Larynx", id="thyroid-cartilage"),
        pytest.param("Suprarenal", ADRENAL, id="suprarenal-not-kidney"),
        pytest.param("心脏", HEART, id="zh-heart"),
        pytest.param("肝", LIVER, id="zh-liver"),
        pytest.param("肾上腺", ADRENAL, id="zh-adrenal-masks-kidney"),
        pytest.param("甲状旁腺", "Parathyroid gland", id="zh-parathyroid-masks-thyroid"),
        pytest.param("胰腺", "Pancreas", id="zh-pancreas"),
        pytest.param("胃", "Stomach (Gaster)", id="zh-stomach"),
    ],
)
def test_match_organ(vocab: Vocabulary, name: str, organ: str) -> None:
    assert vocab.match_organ(name) == organ


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("septum", id="ambiguous-septum"),
        pytest.param("medulla", id="ambiguous-medulla"),
        pytest.param("current", id="ren-inside-word"),
        pytest.param("record", id="cor-inside-word"),
        pytest.param("sinus", id="ambiguous-sinus"),
        pytest.param("spinal", id="ambiguous-spinal"),
        pytest.param("by mouth", id="masking-phrase"),
        pytest.param("pneumonia", id="condition-is-not-an-organ-name"),
        pytest.param("Nervous system", id="body-system"),
        pytest.param("恶心", id="zh-nausea-is-not-heart"),
        pytest.param("   ", id="blank"),
    ],
)
def test_match_organ_returns_none(vocab: Vocabulary, name: str) -> None:
    assert vocab.match_organ(name) is None


@pytest.mark.parametrize(
    ("text", "organs"),
    [
        pytest.param("The current record shows renal failure.", [KIDNEY], id="no-substring-matches"),
        pytest.param("Ren and cor are Latin.", [], id="one-word-latin-not-text-keywords"),
        pytest.param("Liver enlarged. Heart normal. Liver again.", [LIVER, HEART], id="first-mention-order"),
        pytest.param("Pulmonary artery pressure is 35.", [ARTERY], id="longest-masks-shorter"),
        pytest.param("Normal sinus rhythm; sinuses are clear.", [HEART, "Nose (Nasus)"], id="sinus-phrases"),
        pytest.param("Take one tablet by mouth daily.", [], id="masked-by-mouth"),
        pytest.param("History of pneumonia.", [LUNG], id="condition-term"),
        pytest.param("Mild septum thickening; medulla normal.", [], id="ambiguous-keys-dropped"),
        pytest.param("患者心脏扩大，肝功能异常，肾上腺结节。", [HEART, LIVER, ADRENAL], id="zh-substrings"),
        pytest.param("恶心，肝素治疗。", [], id="zh-masks"),
        pytest.param("Renal cysts; 肺部感染", [KIDNEY, LUNG], id="mixed-scripts"),
    ],
)
def test_organs_in_text(vocab: Vocabulary, text: str, organs: list[str]) -> None:
    assert vocab.organs_in_text(text) == organs


@pytest.mark.parametrize(
    ("organ", "given", "location"),
    [
        pytest.param(HEART, "Left Ventricle (LV)", "Left Ventricle (LV)", id="canonical"),
        pytest.param(HEART, "LV", "Left Ventricle (LV)", id="abbreviation"),
        pytest.param(HEART, "lv", "Left Ventricle (LV)", id="abbreviation-any-case"),
        pytest.param(HEART, "  left   VENTRICULAR ", "Left Ventricle (LV)", id="adjective-spacing"),
        pytest.param("Heart", "left ventricle", "Left Ventricle (LV)", id="organ-by-head"),
        pytest.param(HEART, "LA", "Left Atrium (LA)", id="ambiguous-abbreviation-still-accepted"),
        pytest.param(LIVER, "CBD", "Common Bile Duct (CBD)", id="cbd"),
        pytest.param(LIVER, "common bile duct", "Common Bile Duct (CBD)", id="cbd-words"),
        pytest.param("Pancreas", "head of pancreas", "Head of the Pancreas", id="article-ignored"),
        pytest.param(LUNG, "RUL", "Superior Lobe", id="lobe-abbreviation"),
        pytest.param(LUNG, "right upper lobes", "Superior Lobe", id="plural"),
        pytest.param(HEART, "左心室", "Left Ventricle (LV)", id="zh"),
        pytest.param(HEART, "mitral valve annulus", "Mitral Valve", id="one-location-inside"),
        pytest.param(KIDNEY, "renal pyramids", "Renal Medulla (Pyramids)", id="synonym"),
    ],
)
def test_match_location(vocab: Vocabulary, organ: str, given: str, location: str) -> None:
    assert vocab.match_location(organ, given) == location


@pytest.mark.parametrize(
    ("organ", "given"),
    [
        pytest.param(HEART, "Esophagus", id="other-organ"),
        pytest.param(LIVER, "LV", id="other-organs-abbreviation"),
        pytest.param(HEART, "left ventricle and left atrium", id="two-locations-ambiguous"),
        pytest.param(HEART, "septum", id="ambiguous-septum"),
        pytest.param("Nervous system", "LV", id="unknown-organ"),
    ],
)
def test_match_location_returns_none(vocab: Vocabulary, organ: str, given: str) -> None:
    assert vocab.match_location(organ, given) is None


def test_every_location_and_head_round_trips(vocab: Vocabulary) -> None:
    for organ in vocab.organs:
        assert vocab.match_organ(organ) == organ
        for location in vocab.locations(organ):
            assert vocab.match_location(organ, location) == location, (organ, location)


@pytest.mark.parametrize(
    ("text", "locations"),
    [
        pytest.param(
            "Mild LV hypertrophy. Normal left ventricle. Mild mitral regurgitation.",
            ["Left Ventricle (LV)", "Mitral Valve"],
            id="first-mention-deduplicated",
        ),
        pytest.param("the lv is normal", [], id="abbreviation-needs-capitals"),
        pytest.param("History of RA and LA trip.", [], id="ambiguous-abbreviations-not-in-text"),
        pytest.param("Interventricular septum 1.2 cm.", ["Interventricular Septum (IVS)"], id="longest-phrase"),
        pytest.param("左心室增大，二尖瓣反流", ["Left Ventricle (LV)", "Mitral Valve"], id="zh"),
    ],
)
def test_locations_in_text(vocab: Vocabulary, text: str, locations: list[str]) -> None:
    assert vocab.locations_in_text(HEART, text) == locations


def test_locations_of_unknown_organ_raise_key_error(vocab: Vocabulary) -> None:
    with pytest.raises(KeyError, match="Nervous system"):
        vocab.locations("Nervous system")


def test_phrase_key_ignores_case_article_and_plural() -> None:
    assert phrase_key("Head of the Pancreas") == phrase_key("head  of pancreas")
    assert phrase_key("Papillary Muscles") == phrase_key("papillary muscle")


def _organ(name: str, head: str, alias: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "head": head, "alias": alias, "locations": [], **extra}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({"organs": [_organ("Heart", "Heart")]}, "version", id="no-version"),
        pytest.param({"version": "t", "organs": []}, "organs", id="no-organs"),
        pytest.param({"version": "t", "organs": [_organ("Heart (Cor)", "Heart")]}, "Heart", id="name-vs-head"),
        pytest.param(
            {"version": "t", "organs": [_organ("A", "A", keywords=["x"]), _organ("B", "B", keywords=["x"])]},
            "'x'",
            id="keyword-for-two-organs",
        ),
        pytest.param(
            {"version": "t", "organs": [_organ("A", "A", locations=[{"name": "P", "synonyms": ["q"]}, {"name": "Q"}])]},
            "'Q'",
            id="synonym-for-two-locations",
        ),
    ],
)
def test_from_data_rejects_a_broken_vocabulary(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Vocabulary.from_data(data, source="test vocabulary")


def test_real_notes_mostly_name_organs_each_listed_once(vocab: Vocabulary) -> None:
    if not NOTES.is_dir():
        pytest.skip(f"sample notes not present at {NOTES}")
    notes = sorted(NOTES.glob("report_*.txt"))[:100]
    found = [vocab.organs_in_text(note.read_text(encoding="utf-8", errors="replace")) for note in notes]
    assert all(len(organs) == len(set(organs)) for organs in found)  # first mentions only
    assert sum(1 for organs in found if organs) >= len(notes) * 3 // 4  # 91 of the first 100 name an organ
    echo = NOTES / "report_20001.txt"
    if echo.is_file():
        assert vocab.organs_in_text(echo.read_text(encoding="utf-8", errors="replace"))[0] == HEART
