"""Script and code-switching: are the influential examples of a language written in its own script?

The paper found that only 11% of the influential Korean training samples were fully written in
Hangul: much apparent "cross-lingual" influence can come from shared subwords (Latin words, numbers in
another script, code-switching) rather than from the language itself. For every training language we
report the share of its top-k entries whose letters are all in the language's expected script, and the
same share over all its training examples (the baseline the top-k share should be compared with).

Each character's script comes from its Unicode character name (``unicodedata``, standard library):
"LATIN SMALL LETTER A" is Latin, "CJK UNIFIED IDEOGRAPH-4E00" is Han, "HANGUL SYLLABLE GA" is Hangul.
Only letters (categories L*) and combining marks (M*) of a named script count; digits, punctuation,
symbols (emoji included), spaces and script-neutral combining marks are ignored. A text without any
letter is left out. Columns: ``lingtrace.analysis.tables.SCRIPT_PURITY``.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

from lingtrace.analysis.common import ALL, SUMMED, NotApplicable, example_text, language_order, sort_table
from lingtrace.data import schema

LATIN = "Latin"
HAN = "Han"
HANGUL = "Hangul"
HIRAGANA = "Hiragana"
KATAKANA = "Katakana"

#: Unicode-name prefixes -> script (longest match wins; "FULLWIDTH"/"HALFWIDTH" are stripped first)
_NAME_PREFIXES: dict[str, str] = {
    "LATIN": LATIN,
    "CYRILLIC": "Cyrillic",
    "GREEK": "Greek",
    "COPTIC": "Coptic",
    "ARMENIAN": "Armenian",
    "GEORGIAN": "Georgian",
    "HEBREW": "Hebrew",
    "ARABIC": "Arabic",
    "SYRIAC": "Syriac",
    "THAANA": "Thaana",
    "NKO": "Nko",
    "DEVANAGARI": "Devanagari",
    "BENGALI": "Bengali",
    "GURMUKHI": "Gurmukhi",
    "GUJARATI": "Gujarati",
    "ORIYA": "Oriya",
    "TAMIL": "Tamil",
    "TELUGU": "Telugu",
    "KANNADA": "Kannada",
    "MALAYALAM": "Malayalam",
    "SINHALA": "Sinhala",
    "THAI": "Thai",
    "LAO": "Lao",
    "TIBETAN": "Tibetan",
    "MYANMAR": "Myanmar",
    "KHMER": "Khmer",
    "MONGOLIAN": "Mongolian",
    "ETHIOPIC": "Ethiopic",
    "CHEROKEE": "Cherokee",
    "CANADIAN SYLLABICS": "Canadian_Aboriginal",
    "OGHAM": "Ogham",
    "RUNIC": "Runic",
    "TAGALOG": "Tagalog",
    "JAVANESE": "Javanese",
    "BALINESE": "Balinese",
    "SUNDANESE": "Sundanese",
    "TIFINAGH": "Tifinagh",
    "VAI": "Vai",
    "OL CHIKI": "Ol_Chiki",
    "HANGUL": HANGUL,
    "HIRAGANA": HIRAGANA,
    "KATAKANA": KATAKANA,
    "KATAKANA-HIRAGANA": KATAKANA,
    "BOPOMOFO": "Bopomofo",
    "CJK UNIFIED IDEOGRAPH": HAN,
    "CJK COMPATIBILITY IDEOGRAPH": HAN,
    "IDEOGRAPHIC": HAN,
    "YI": "Yi",
}
_PREFIXES_BY_LENGTH = sorted(_NAME_PREFIXES, key=len, reverse=True)

_SCRIPTS_BY_LANG: dict[str, tuple[str, ...]] = {}
for _script, _langs in {
    (LATIN,): "af az br bs ca co cs cy da de en eo es et eu fi fil fo fr fy ga gd gl gn ha haw ht hr hu id ig is "
    "it jv ku la lb lt lv mg mi ms mt nb nl nn no oc om pl pt qu rm ro rw sk sl sm sn so sq st su sv sw tl tk "
    "tn tr uz vi wo xh yo zu",
    ("Cyrillic",): "ba be bg ce cv kk ky mk mn os ru sah tg tt uk",
    ("Cyrillic", LATIN): "sr",
    ("Greek",): "el",
    ("Armenian",): "hy",
    ("Georgian",): "ka",
    ("Hebrew",): "he iw yi",
    ("Arabic",): "ar ckb fa ps sd ug ur",
    ("Devanagari",): "hi mr ne sa mai bho",
    ("Bengali",): "bn as",
    ("Gurmukhi",): "pa",
    ("Gujarati",): "gu",
    ("Oriya",): "or",
    ("Tamil",): "ta",
    ("Telugu",): "te",
    ("Kannada",): "kn",
    ("Malayalam",): "ml",
    ("Sinhala",): "si",
    ("Thai",): "th",
    ("Lao",): "lo",
    ("Tibetan",): "bo dz",
    ("Myanmar",): "my",
    ("Khmer",): "km",
    ("Ethiopic",): "am ti",
    ("Thaana",): "dv",
    (HANGUL,): "ko",
    (HIRAGANA, KATAKANA, HAN): "ja",
    (HAN, "Bopomofo"): "zh yue",
}.items():
    for _lang in _langs.split():
        _SCRIPTS_BY_LANG[_lang] = _script


def expected_scripts(lang: str) -> tuple[str, ...] | None:
    """The script(s) a language is normally written in (``None`` when unknown).

    Region/script subtags are ignored: ``zh-TW``, ``pt_BR`` -> ``zh``, ``pt``.
    """
    base = str(lang).lower().replace("_", "-").split("-")[0]
    return _SCRIPTS_BY_LANG.get(base)


@lru_cache(maxsize=65536)
def char_script(ch: str) -> str | None:
    """The script of a letter or combining mark; ``None`` for script-neutral characters."""
    cat = unicodedata.category(ch)
    if cat[0] not in "LM":
        return None
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return None
    for width in ("FULLWIDTH ", "HALFWIDTH "):
        if name.startswith(width):
            name = name[len(width) :]
    for prefix in _PREFIXES_BY_LENGTH:
        if name.startswith(prefix) and (len(name) == len(prefix) or name[len(prefix)] in " -"):
            return _NAME_PREFIXES[prefix]
    return None


def text_scripts(text: str) -> Counter:
    """Letters per script in ``text`` (script-neutral characters are not counted)."""
    out: Counter = Counter()
    for ch in str(text):
        s = char_script(ch)
        if s is not None:
            out[s] += 1
    return out


def is_pure(text: str, scripts: Iterable[str]) -> bool | None:
    """True when every letter of ``text`` is in one of ``scripts``; ``None`` when it has no letter."""
    found = text_scripts(text)
    if not found:
        return None
    return set(found) <= set(scripts)


COLUMNS = [
    "direction",
    "test_lang",
    "train_lang",
    "expected_script",
    "n_topk",
    "pct_pure_topk",
    "n_train",
    "pct_pure_train",
    "other_scripts",
]


def script_purity(
    topk: pd.DataFrame,
    train: pd.DataFrame,
    languages: Sequence[str] | None = None,
    epoch: int = SUMMED,
) -> pd.DataFrame:
    """The ``script_purity`` table (see the module docstring); unknown languages go to ``.attrs["notes"]``."""
    texts = [example_text(a, b) for a, b in zip(train[schema.TEXT_A], train[schema.TEXT_B])]
    train_langs = train[schema.LANG].astype(str).to_numpy()
    order = language_order(languages, train_langs)
    known = {lang: expected_scripts(lang) for lang in order}
    unknown = [lang for lang, sc in known.items() if sc is None]
    if len(unknown) == len(order):
        raise NotApplicable(f"no expected script is known for the training language(s) {', '.join(order)}")
    # per training example: pure (True/False/None) and the foreign scripts it contains
    uid_pure: dict[str, bool | None] = {}
    uid_other: dict[str, tuple[str, ...]] = {}
    base: dict[str, list[bool]] = {lang: [] for lang in order}
    for uid, lang, text in zip(train[schema.UID].astype(str), train_langs, texts):
        scripts = known.get(lang)
        if scripts is None:
            continue
        found = text_scripts(text)
        pure = None if not found else set(found) <= set(scripts)
        uid_pure[uid] = pure
        uid_other[uid] = tuple(sorted(set(found) - set(scripts)))
        if pure is not None:
            base[lang].append(pure)
    sel = topk[topk["epoch"] == epoch]
    sel = sel[sel["train_lang"].astype(str).isin([lang for lang in order if known[lang] is not None])]
    pure_col = sel["train_uid"].astype(str).map(uid_pure)
    sel = sel.assign(_pure=pure_col)[pure_col.notna()]
    rows = []
    test_order = language_order(languages, topk["test_lang"])
    for direction, dgrp in sel.groupby("direction", sort=False):
        for test_lang in [*test_order, ALL]:
            tgrp = dgrp if test_lang == ALL else dgrp[dgrp["test_lang"] == test_lang]
            if tgrp.empty:
                continue
            for lang in order:
                if known[lang] is None:
                    continue
                g = tgrp[tgrp["train_lang"] == lang]
                b = base[lang]
                mixed = g.loc[~g["_pure"].astype(bool), "train_uid"].astype(str)
                other: Counter = Counter()
                for uid in mixed:
                    other.update(uid_other[uid])
                rows.append(
                    {
                        "direction": direction,
                        "test_lang": test_lang,
                        "train_lang": lang,
                        "expected_script": "+".join(known[lang]),
                        "n_topk": int(len(g)),
                        "pct_pure_topk": 100.0 * float(g["_pure"].astype(bool).mean()) if len(g) else float("nan"),
                        "n_train": len(b),
                        "pct_pure_train": 100.0 * float(np.mean(b)) if b else float("nan"),
                        "other_scripts": ", ".join(
                            f"{s} {100.0 * c / len(g):.0f}%" for s, c in sorted(other.items(), key=lambda kv: (-kv[1], kv[0]))
                        ),
                    }
                )
    out = sort_table(pd.DataFrame(rows, columns=COLUMNS), [*test_order, ALL], order)
    out.attrs["notes"] = (
        [f"no expected script is known for {', '.join(unknown)}: left out of the script analysis"] if unknown else []
    )
    return out
