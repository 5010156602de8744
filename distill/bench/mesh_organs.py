"""Which of the 55 vocabulary organs a chest X-ray MeSH term concerns.

An Open-i term is ``Head/qualifier/...``. The head is either a finding ("Cardiomegaly",
"Pleural Effusion") or an anatomy whose qualifier is the finding ("Aorta/tortuous"). The
table below gives each head the organ a radiologist would file it under; heads that name
bone, soft tissue, devices or image quality concern none of the 55 organs (the vocabulary
has no bone, diaphragm or mediastinum) and map to ``None``. Generic findings ("Opacity",
"Nodule", "Calcinosis") take their organ from the qualifiers ("Opacity/lung/base/left" is
Lung; "Calcinosis/aorta" is Artery); without an anatomical qualifier they default to the
organ the finding almost always concerns on a chest film, or to none.

Written from clinical knowledge and ``shared/reference/organ_anatomy_reference.json``; it is
the answer key's reading, so it lives with the evaluation, not with the teacher.
"""

from __future__ import annotations

LUNG = "Lung (Pulmo)"
HEART = "Heart (Cor)"
ARTERY = "Artery (Arteria)"
VEIN = "Vein (Vena)"

#: Heads that name the organ (or its condition) outright.
HEAD_ORGAN: dict[str, str | None] = {
    "lung": LUNG, "pulmonary atelectasis": LUNG, "pleural effusion": LUNG, "airspace disease": LUNG,
    "granulomatous disease": LUNG, "pulmonary congestion": LUNG, "emphysema": LUNG, "pulmonary emphysema": LUNG,
    "bullous emphysema": LUNG, "infiltrate": LUNG, "pulmonary disease, chronic obstructive": LUNG,
    "pneumonia": LUNG, "pulmonary edema": LUNG, "consolidation": LUNG, "pneumothorax": LUNG,
    "hemopneumothorax": LUNG, "hydropneumothorax": LUNG, "pulmonary fibrosis": LUNG, "fibrosis": LUNG,
    "lung, hyperlucent": LUNG, "lung diseases, interstitial": LUNG, "volume loss": LUNG, "pleura": LUNG,
    "costophrenic angle": LUNG, "cystic fibrosis": LUNG, "sarcoidosis": LUNG, "tuberculosis": LUNG,
    "bronchiolitis": LUNG, "pneumonectomy": LUNG, "cavitation": LUNG, "markings": LUNG,
    "calcified granuloma": LUNG, "granuloma": LUNG, "cicatrix": LUNG,
    "cardiomegaly": HEART, "cardiac shadow": HEART, "heart": HEART, "heart failure": HEART,
    "heart ventricles": HEART, "heart atria": HEART, "pericardial effusion": HEART, "epicardial fat": HEART,
    "aorta": ARTERY, "aorta, thoracic": ARTERY, "atherosclerosis": ARTERY, "aortic aneurysm": ARTERY,
    "pulmonary artery": ARTERY, "hypertension, pulmonary": ARTERY, "blood vessels": ARTERY,
    "bronchiectasis": "Bronchus", "bronchitis": "Bronchus",
    "trachea": "Trachea", "trachea, carina": "Trachea",
    "hernia, hiatal": "Stomach (Gaster)", "cholelithiasis": "Gallbladder (Vesica biliaris)",
    "lymph nodes": "Lymph node", "breast implants": "Mammary gland", "mastectomy": "Mammary gland",
    "colonic interposition": "Large intestine (Intestinum crassum)",
}

#: Heads that concern no vocabulary organ: bone and joints, chest wall, diaphragm, mediastinum
#: as a space, devices, artefacts, image quality and "no finding" terms.
NO_ORGAN = frozenset({
    "normal", "no indexing", "technical quality of image unsatisfactory", "thoracic vertebrae", "spine",
    "diaphragm", "deformity", "catheters, indwelling", "scoliosis", "surgical instruments", "fractures, bone",
    "implanted medical device", "spondylosis", "osteophyte", "kyphosis", "arthritis", "bone diseases, metabolic",
    "diaphragmatic eventration", "tube, inserted", "mediastinum", "medical device", "spinal fusion", "stents",
    "shoulder", "shift", "lumbar vertebrae", "sclerosis", "nipple shadow", "dislocations", "subcutaneous emphysema",
    "sutures", "sulcus", "adipose tissue", "blister", "hyperostosis, diffuse idiopathic skeletal", "bone and bones",
    "pneumoperitoneum", "funnel chest", "pectus carinatum", "ribs", "contrast media", "cervical vertebrae",
    "hernia, diaphragmatic", "abdomen", "osteoporosis", "expansile bone lesions", "humerus", "hypovolemia",
    "foreign bodies",
})

#: Generic findings whose organ comes from the qualifiers, with the default when none is given.
GENERIC_DEFAULT: dict[str, str | None] = {
    "opacity": LUNG, "density": LUNG, "nodule": LUNG, "calcinosis": None, "thickening": None, "mass": None,
    "lucency": None, "cysts": None,
}

#: Qualifier words that place a generic finding (first match wins, in term order).
QUALIFIER_ORGAN: dict[str, str | None] = {
    "lung": LUNG, "lingula": LUNG, "upper lobe": LUNG, "middle lobe": LUNG, "lower lobe": LUNG,
    "pulmonary alveoli": LUNG, "mitral valve": HEART, "coronary vessels": HEART, "blood vessels": ARTERY,
    "trachea, carina": "Trachea", "sternum": None, "humerus": None, "paratracheal": None, "pleura": LUNG, "hilum": LUNG, "costophrenic angle": LUNG,
    "heart": HEART, "heart ventricles": HEART, "heart atria": HEART, "pericardium": HEART, "cardiac shadow": HEART,
    "aorta": ARTERY, "aorta, thoracic": ARTERY, "pulmonary artery": ARTERY, "arteries": ARTERY, "vena cava, superior": VEIN,
    "lymph nodes": "Lymph node", "trachea": "Trachea", "bronchi": "Bronchus",
    "mediastinum": None, "spine": None, "thoracic vertebrae": None, "ribs": None, "diaphragm": None,
    "shoulder": None, "clavicle": None, "soft tissue": None, "breast": "Mammary gland", "abdomen": None,
}


def organ_of_term(term: str) -> str | None:
    """The vocabulary organ one MeSH term concerns, or None (no organ, or not one of the 55)."""
    parts = [" ".join(p.split()).lower() for p in term.split("/") if p.strip()]
    if not parts:
        return None
    head, qualifiers = parts[0], parts[1:]
    if head in NO_ORGAN:
        return None
    if head in GENERIC_DEFAULT:
        for qualifier in qualifiers:
            if qualifier in QUALIFIER_ORGAN:
                return QUALIFIER_ORGAN[qualifier]
        return GENERIC_DEFAULT[head]
    return HEAD_ORGAN.get(head)


def organs_of_terms(terms: list[str]) -> set[str]:
    """The organs a report's MeSH terms concern."""
    return {organ for organ in map(organ_of_term, terms) if organ is not None}
