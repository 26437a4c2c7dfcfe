"""Column names of the example tables every stage reads and writes."""

UID = "uid"
LANG = "lang"
TRANSLATION_ID = "translation_id"
TEXT_A = "text_a"
TEXT_B = "text_b"
LABEL = "label"
SPLIT = "split"

EXAMPLE_COLUMNS = [UID, LANG, TRANSLATION_ID, TEXT_A, TEXT_B, LABEL]

# written by `lingtrace select`
PRED = "pred"
CONFIDENCE = "confidence"
