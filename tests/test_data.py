"""Data: the embedded emoji extract, the readers (official formats, local tables, hub), and sampling."""

from __future__ import annotations

import gzip
import json
import sys
import types
import unicodedata

import pandas as pd
import pytest

from lingtrace.config import DataConfig
from lingtrace.data import emoji as emoji_mod
from lingtrace.data.schema import EXAMPLE_COLUMNS, LABEL, LANG, SPLIT, TEXT_A, TEXT_B, TRANSLATION_ID, UID
from lingtrace.data.tasks import TASKS, get_task
from lingtrace.errors import LingtraceError
from lingtrace.prepare.readers import (
    FRAME_COLUMNS,
    finalize_frames,
    load_task,
    read_hub,
    read_local,
    read_marc_official,
    read_pawsx_official,
    read_xnli_official,
)
from lingtrace.prepare.sampling import prepare_splits

EMOJI_LOCALES = ["de", "es", "fr", "ru", "zh", "ko", "ja", "en", "it", "hi", "pt"]


def _check_frame(df: pd.DataFrame) -> None:
    assert list(df.columns) == FRAME_COLUMNS
    assert set(df[SPLIT]) <= {"train", "dev", "test"}
    assert all(isinstance(v, str) for v in df[TRANSLATION_ID])
    assert all(isinstance(v, str) for v in df[TEXT_A]) and all(isinstance(v, str) for v in df[TEXT_B])
    assert pd.api.types.is_integer_dtype(df[LABEL])


# ---------------------------------------------------------------- emoji extract


def test_emoji_extract_shape_and_alignment():
    d = emoji_mod.emoji_dir()
    files = {p.name for p in d.iterdir()}
    assert {"emoji.jsonl.gz", "meta.json", "LICENSE"} <= files
    assert sum(p.stat().st_size for p in d.iterdir()) < 2_000_000
    licence = (d / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in licence and "CLDR" in licence and "Unicode" in licence

    with gzip.open(d / "emoji.jsonl.gz", "rt", encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    assert len(recs) == 1914
    assert len({r["hexcode"] for r in recs}) == 1914
    assert {r["group"] for r in recs} == set(range(9))
    for r in recs:
        assert set(r["text"]) == set(EMOJI_LOCALES)
        assert all(t.strip() for t in r["text"].values())

    meta = emoji_mod.emoji_meta()
    assert meta["label_names"] == list(TASKS["emoji"].label_names)
    assert meta["label_names"][0] == "smileys-emotion" and len(meta["label_names"]) == 9

    df = emoji_mod.read_emoji(EMOJI_LOCALES)
    _check_frame(df)
    per_lang = df.groupby(LANG)[TRANSLATION_ID].apply(frozenset)
    assert (df.groupby(LANG).size() == 1914).all()
    assert len(set(per_lang)) == 1  # identical hexcode sets across locales
    # labels agree across locales for the same hexcode
    assert (df.groupby(TRANSLATION_ID)[LABEL].nunique() == 1).all()

    def script(text, name):
        return any(name in unicodedata.name(c, "") for c in text)

    assert script(df[df[LANG] == "ru"][TEXT_A].str.cat(), "CYRILLIC")
    assert script(df[df[LANG] == "zh"][TEXT_A].str.cat(), "CJK")
    assert script(df[df[LANG] == "ko"][TEXT_A].str.cat(), "HANGUL")


def test_emoji_unknown_language():
    with pytest.raises(LingtraceError, match="not available for task emoji") as e:
        emoji_mod.read_emoji(["de", "xx"])
    assert "de" in e.value.fix and "zh" in e.value.fix


# ---------------------------------------------------------------- task registry


def test_get_task():
    assert get_task("xnli").num_labels == 2 and get_task("xnli").parallel and get_task("xnli").pair
    assert not get_task("marc").parallel
    assert get_task("emoji").num_labels == 9 and get_task("emoji").default_source == "embedded"
    assert get_task("pawsx").hub_name == "google-research-datasets/paws-x"
    with pytest.raises(LingtraceError, match="unknown task 'nope'") as e:
        get_task("nope")
    assert "xnli" in e.value.fix and "emoji" in e.value.fix


# ---------------------------------------------------------------- official formats: writers

XNLI_EVAL_HEADER = [
    "language",
    "gold_label",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
    "promptID",
    "pairID",
    "genre",
]


def write_xnli(root, langs=("en", "de"), bad_line=True):
    mt = root / "XNLI-MT-1.0" / "multinli"
    mt.mkdir(parents=True)
    labels = ["entailment", "neutral", "contradictory", "entailment", "contradictory"]
    for lang in langs:
        lines = ["premise\thypo\tlabel"]
        for i, lab in enumerate(labels):
            if bad_line and lang == "de" and i == 1:
                lines.append("a\tbroken\tline\twith too many fields")
                continue
            lines.append(f'{lang} premise "{i}\t{lang} hypothesis {i}\t{lab}')
        (mt / f"multinli.train.{lang}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    x = root / "XNLI-1.0"
    x.mkdir()
    for split in ("dev", "test"):
        lines = ["\t".join(XNLI_EVAL_HEADER)]
        for lang in (*langs, "fr"):
            for pid, lab in ((1, "entailment"), (2, "neutral"), (3, "contradiction")):
                row = [
                    lang,
                    lab,
                    "(",
                    "(",
                    "(",
                    "(",
                    f"{lang} s1 {pid}",
                    f"{lang} s2 {pid}",
                    "7",
                    str(pid),
                    "fiction",
                ]
                lines.append("\t".join(row))
        (x / f"xnli.{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_xnli_official(tmp_path):
    write_xnli(tmp_path)
    df = read_xnli_official(tmp_path, ["en", "de"])
    _check_frame(df)
    tr = df[df[SPLIT] == "train"]
    en, de = tr[tr[LANG] == "en"], tr[tr[LANG] == "de"]
    assert list(en[TRANSLATION_ID]) == ["0", "1", "2", "3", "4"]
    assert list(de[TRANSLATION_ID]) == ["0", "2", "3", "4"]  # malformed line skipped, ids stay aligned
    assert list(en[LABEL]) == [1, 0, 0, 1, 0]  # contradictory -> 0, entailment -> 1
    assert en[TEXT_A].iloc[0] == 'en premise "0'  # QUOTE_NONE keeps stray quotes
    dev = df[(df[SPLIT] == "dev") & (df[LANG] == "de")]
    assert list(dev[TRANSLATION_ID]) == ["1", "2", "3"] and list(dev[LABEL]) == [1, 0, 0]
    assert set(df[LANG]) == {"en", "de"}  # fr rows in xnli.dev.tsv are not read
    # the user may point at the XNLI-MT folder's parent or a folder holding both zips' contents
    frames, spec = load_task(
        DataConfig(task="xnli", source="official", path=str(tmp_path), languages=["de", "en"])
    )
    assert spec.name == "xnli" and len(frames) == len(df)


def test_xnli_official_errors(tmp_path):
    write_xnli(tmp_path)
    with pytest.raises(LingtraceError, match="language 'ru' is not available") as e:
        read_xnli_official(tmp_path, ["ru"])
    assert "de, en" in e.value.fix
    (tmp_path / "XNLI-1.0" / "xnli.test.tsv").unlink()
    with pytest.raises(LingtraceError, match=r"XNLI test file: expected .*XNLI-1\.0/xnli\.test\.tsv"):
        read_xnli_official(tmp_path, ["en"])
    with pytest.raises(LingtraceError, match="does not exist"):
        read_xnli_official(tmp_path / "nowhere", ["en"])


def test_xnli_bad_label_and_missing_column(tmp_path):
    mt = tmp_path / "multinli"
    mt.mkdir()
    (mt / "multinli.train.en.tsv").write_text("premise\thypo\tlabel\na\tb\tmaybe\n", encoding="utf-8")
    (tmp_path / "xnli.dev.tsv").write_text("language\tsentence1\nen\tx\n", encoding="utf-8")
    with pytest.raises(LingtraceError, match="label 'maybe' .* outside the XNLI label set"):
        read_xnli_official(tmp_path, ["en"])
    (mt / "multinli.train.en.tsv").write_text("premise\thypothesis\tlabel\na\tb\tneutral\n", encoding="utf-8")
    with pytest.raises(
        LingtraceError, match="column 'hypo' missing .*columns found: premise, hypothesis, label"
    ):
        read_xnli_official(tmp_path, ["en"])
    (mt / "multinli.train.en.tsv").write_text("premise\thypo\tlabel\na\tb\tneutral\n", encoding="utf-8")
    with pytest.raises(LingtraceError, match="column 'gold_label' missing"):
        read_xnli_official(tmp_path, ["en"])


def write_pawsx(root, langs=("en", "de")):
    for lang in langs:
        d = root / "x-final" / lang
        d.mkdir(parents=True)
        files = {
            "dev_2k.tsv": 3,
            "test_2k.tsv": 3,
            ("train.tsv" if lang == "en" else "translated_train.tsv"): 5,
        }
        for name, n in files.items():
            lines = ["id\tsentence1\tsentence2\tlabel"]
            for i in range(1, n + 1):
                s2 = "" if (lang == "de" and name.startswith("translated") and i == 2) else f"{lang} b {i}"
                lines.append(f"{i}\t{lang} a {i}\t{s2}\t{i % 2}")
            (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_pawsx_official(tmp_path):
    write_pawsx(tmp_path)
    df = read_pawsx_official(tmp_path, ["en", "de"])
    _check_frame(df)
    tr = df[df[SPLIT] == "train"]
    assert list(tr[tr[LANG] == "en"][TRANSLATION_ID]) == ["1", "2", "3", "4", "5"]
    assert list(tr[tr[LANG] == "de"][TRANSLATION_ID]) == ["1", "3", "4", "5"]  # empty sentence dropped
    assert list(tr[tr[LANG] == "en"][LABEL]) == [1, 0, 1, 0, 1]
    assert (df.groupby([SPLIT, LANG]).size().loc[["dev", "test"]] == 3).all()
    # pointing at x-final itself works too
    df2 = read_pawsx_official(tmp_path / "x-final", ["de"])
    assert len(df2) == 4 + 3 + 3


def test_pawsx_errors(tmp_path):
    write_pawsx(tmp_path)
    with pytest.raises(LingtraceError, match="language 'ko' is not available for task pawsx") as e:
        read_pawsx_official(tmp_path, ["ko"])
    assert "de, en" in e.value.fix
    (tmp_path / "x-final" / "de" / "test_2k.tsv").unlink()
    (tmp_path / "x-final" / "en" / "dev_2k.tsv").unlink()
    with pytest.raises(LingtraceError, match=r"PAWS-X dev file for 'en': expected .*x-final/en/dev_2k\.tsv"):
        read_pawsx_official(tmp_path, ["en"])
    (tmp_path / "x-final" / "en" / "dev_2k.tsv").write_text("id\tsentence1\tsentence2\tlabel\n1\ta\tb\t7\n")
    with pytest.raises(LingtraceError, match="label '7' .* outside the PAWS-X label set"):
        read_pawsx_official(tmp_path, ["en"])


def write_marc(root, langs=("en", "de"), nested=True):
    for lang in langs:
        for split in ("train", "dev", "test"):
            d = root / split if nested else root
            d.mkdir(parents=True, exist_ok=True)
            recs = [
                {
                    "review_id": f"{lang}_{split}_{i}",
                    "product_id": "p",
                    "reviewer_id": "r",
                    "stars": str(stars),
                    "review_body": f"{lang} body {i}",
                    "review_title": f"{lang} title {i}",
                    "language": lang,
                    "product_category": "home",
                }
                for i, stars in enumerate([1, 2, 3, 4, 5])
            ]
            (d / f"dataset_{lang}_{split}.json").write_text(
                "\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n", encoding="utf-8"
            )


@pytest.mark.parametrize("nested", [True, False])
def test_marc_official(tmp_path, nested):
    write_marc(tmp_path, nested=nested)
    df = read_marc_official(tmp_path, ["en", "de"])
    _check_frame(df)
    assert (df.groupby([SPLIT, LANG]).size() == 4).all()  # the 3-star review is dropped
    en = df[(df[SPLIT] == "train") & (df[LANG] == "en")]
    assert list(en[LABEL]) == [0, 0, 1, 1]
    assert list(en[TRANSLATION_ID]) == ["en_train_0", "en_train_1", "en_train_3", "en_train_4"]
    assert en[TEXT_A].iloc[0] == "en title 0" and en[TEXT_B].iloc[0] == "en body 0"


def test_marc_errors(tmp_path):
    write_marc(tmp_path)
    with pytest.raises(LingtraceError, match="language 'ko' is not available for task marc"):
        read_marc_official(tmp_path, ["ko"])
    (tmp_path / "test" / "dataset_de_test.json").unlink()
    with pytest.raises(
        LingtraceError, match=r"MARC test file for 'de': expected .*test/dataset_de_test\.json"
    ):
        read_marc_official(tmp_path, ["de"])
    (tmp_path / "dev" / "dataset_en_dev.json").write_text(
        '{"review_id": "x", "stars": 9, "review_body": "", "review_title": ""}\n'
    )
    with pytest.raises(LingtraceError, match="star rating 9 is outside 1-5"):
        read_marc_official(tmp_path, ["en"])
    (tmp_path / "dev" / "dataset_en_dev.json").write_text(
        '{"review_id": "x", "stars": 1, "review_body": ""}\n'
    )
    with pytest.raises(LingtraceError, match="column 'review_title' missing"):
        read_marc_official(tmp_path, ["en"])


def test_marc_zero_examples(tmp_path):
    write_marc(tmp_path, langs=("en",))
    for split in ("train", "dev", "test"):
        rec = {"review_id": "a", "stars": 3, "review_body": "meh", "review_title": "ok"}
        (tmp_path / split / f"dataset_de_{split}.json").write_text(json.dumps(rec) + "\n")
    cfg = DataConfig(task="marc", source="official", path=str(tmp_path), languages=["en", "de"])
    with pytest.raises(LingtraceError, match="language 'de' has zero examples for task marc"):
        load_task(cfg)


# ---------------------------------------------------------------- local tables


def _local_table(n_per_lang=6, langs=("en", "de")):
    rows = []
    for lang in langs:
        for i in range(n_per_lang):
            rows.append(
                {
                    "sentence": f"{lang} text {i}",
                    "other": f"{lang} other {i}",
                    "y": ["neg", "pos", "neutral"][i % 3],
                    "language": lang,
                    "gid": f"g{i}",
                    "part": ["train", "train", "train", "validation", "test", "train"][i],
                }
            )
    return pd.DataFrame(rows)


COLS = {
    "text_a": "sentence",
    "text_b": "other",
    "label": "y",
    "lang": "language",
    "translation_id": "gid",
    "split": "part",
}


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_local_single_file(tmp_path, ext):
    df = _local_table()
    p = tmp_path / f"data.{ext}"
    if ext == "csv":
        df.to_csv(p, index=False)
    elif ext == "tsv":
        df.to_csv(p, sep="\t", index=False)
    elif ext == "jsonl":
        df.to_json(p, orient="records", lines=True, force_ascii=False)
    else:
        df.to_parquet(p)
    out, spec = read_local(p, COLS, ["en", "de"])
    _check_frame(out)
    assert spec.label_names == ("neg", "neutral", "pos") and spec.num_labels == 3  # sorted distinct values
    assert spec.parallel and spec.pair
    assert list(out[out[LANG] == "en"][LABEL]) == [0, 2, 1, 0, 2, 1]
    assert out[SPLIT].value_counts().to_dict() == {"train": 8, "dev": 2, "test": 2}
    assert out[TEXT_B].iloc[0] == "en other 0" and out[TRANSLATION_ID].iloc[0] == "g0"


def test_local_directory_and_label_names(tmp_path):
    df = _local_table().rename(columns={"sentence": "text_a", "y": "label", "language": "lang"})
    for split, part in (("train", "train"), ("validation", "validation"), ("test", "test")):
        df[df["part"] == part].drop(columns=["part", "gid", "other"]).to_csv(
            tmp_path / f"{split}.tsv", sep="\t", index=False
        )
    out, spec = read_local(tmp_path, {}, ["de"], label_names=["pos", "neg", "neutral"])
    _check_frame(out)
    assert set(out[LANG]) == {"en", "de"}  # load_task keeps data.languages only
    assert spec.label_names == ("pos", "neg", "neutral") and not spec.parallel and not spec.pair
    assert set(out[SPLIT]) == {"train", "dev", "test"}
    assert out[TEXT_B].eq("").all()
    cfg = DataConfig(
        task="local",
        source="local",
        path=str(tmp_path),
        languages=["de"],
        label_names=["pos", "neg", "neutral"],
    )
    frames, spec2 = load_task(cfg)
    assert set(frames[LANG]) == {"de"} and frames[TRANSLATION_ID].is_unique
    # numeric labels pass through; a single language needs no language column
    pd.DataFrame({"text_a": ["a", "b", "c"], "label": [0, 1, 1]}).to_parquet(tmp_path / "one.parquet")
    out, spec = read_local(tmp_path / "one.parquet", {}, ["ko"])
    assert list(out[LANG]) == ["ko"] * 3 and list(out[LABEL]) == [0, 1, 1] and spec.num_labels == 2
    assert set(out[SPLIT]) == {"train"}  # no split column: one pool


def test_local_source_for_a_registered_task(tmp_path):
    p = tmp_path / "xnli.jsonl"
    rows = [
        {"premise": f"{lang} p{i}", "hypothesis": "h", "gold": g, "language": lang, "pid": i}
        for lang in ("en", "de")
        for i, g in enumerate(["entailment", "neutral", "contradiction"])
    ]
    pd.DataFrame(rows).to_json(p, orient="records", lines=True)
    cols = {
        "text_a": "premise",
        "text_b": "hypothesis",
        "label": "gold",
        "lang": "language",
        "translation_id": "pid",
    }
    cfg = DataConfig(task="xnli", source="local", path=str(p), languages=["en", "de"], columns=cols)
    frames, spec = load_task(cfg)
    assert spec.name == "xnli" and spec.parallel and spec.num_labels == 2
    assert list(frames[frames[LANG] == "de"][LABEL]) == [1, 0, 0]
    no_ids = {k: v for k, v in cols.items() if k != "translation_id"}
    _, spec = load_task(DataConfig(**{**cfg.__dict__, "columns": no_ids}))
    assert not spec.parallel


def test_local_errors(tmp_path):
    df = _local_table()
    p = tmp_path / "d.csv"
    df.to_csv(p, index=False)
    with pytest.raises(
        LingtraceError, match="column 'text' .* not found .*columns found: sentence, other, y"
    ) as e:
        read_local(p, {**COLS, "text_a": "text"}, ["en"])
    assert "data.columns.text_a" in e.value.fix
    with pytest.raises(LingtraceError, match="column 'text_a' .*needed for text_a"):
        read_local(p, {}, ["en"])
    with pytest.raises(LingtraceError, match="unknown key 'txt'"):
        read_local(p, {"txt": "sentence"}, ["en"])
    with pytest.raises(LingtraceError, match="label 'neutral' .* outside the label set"):
        read_local(p, COLS, ["en"], label_names=["neg", "pos"])
    with pytest.raises(LingtraceError, match="language 'fr' is not available") as e:
        read_local(p, COLS, ["fr"])
    assert "de, en" in e.value.fix
    with pytest.raises(LingtraceError, match="no training file in"):
        read_local(_mkdir(tmp_path / "e"), {}, ["en"])
    with pytest.raises(LingtraceError, match="does not exist"):
        read_local(tmp_path / "missing.csv", COLS, ["en"])
    df.assign(part="holdout").to_csv(p, index=False)
    with pytest.raises(LingtraceError, match="split value 'holdout'"):
        read_local(p, COLS, ["en"])
    pd.DataFrame({"text_a": ["a", "b"], "label": [0, 5], "lang": ["en", "en"]}).to_csv(p, index=False)
    cfg = DataConfig(task="local", source="local", path=str(p), languages=["en"], label_names=["a", "b"])
    with pytest.raises(LingtraceError, match="label 5 .* outside task local's label set 0..1"):
        load_task(cfg)
    with pytest.raises(LingtraceError, match="cannot be read from data.source=embedded") as e:
        load_task(DataConfig(task="xnli", source="embedded"))
    assert "official" in e.value.fix and "hub" in e.value.fix


def test_local_empty_label_or_text_stops_prepare(tmp_path, caplog):
    """An empty label cell must not become a class, nor an empty text an example."""
    p = tmp_path / "d.csv"
    rows = {"sentence": ["a", "b", "c", "d", "e"], "y": ["pos", "neg", "", "pos", "neg"], "lang": ["en"] * 5}
    pd.DataFrame(rows).to_csv(p, index=False)
    cols = {"text_a": "sentence", "label": "y"}
    cfg = DataConfig(task="local", source="local", path=str(p), languages=["en"], columns=cols)
    with pytest.raises(LingtraceError) as e:
        load_task(cfg)
    msg = str(e.value)
    assert str(p) in msg and "1 row(s) with an empty or missing label in column 'y'" in msg and "data row 3" in msg
    assert "data.drop_invalid" in e.value.fix and "\n" not in msg
    frames, spec = load_task(DataConfig(**{**cfg.__dict__, "drop_invalid": True}))
    assert spec.label_names == ("neg", "pos") and len(frames) == 4  # no "" class, the row is gone
    assert "dropped 1 row(s)" in caplog.text

    rows["y"][2] = "pos"
    rows["sentence"][1] = "  "
    pd.DataFrame(rows).to_csv(p, index=False)
    with pytest.raises(LingtraceError, match=r"1 row\(s\) with no text in column 'sentence' and 'text_b' \(first: data row 2"):
        load_task(cfg)
    # rows of languages that are not used are not checked
    rows["lang"][1] = "de"
    pd.DataFrame(rows).to_csv(p, index=False)
    assert len(load_task(cfg)[0]) == 4
    # missing values in JSON lines (null) count as empty too
    j = tmp_path / "d.jsonl"
    pd.DataFrame({"text_a": ["a", "b"], "label": [1, None], "lang": ["en", "en"]}).to_json(j, orient="records", lines=True)
    with pytest.raises(LingtraceError, match="empty or missing label in column 'label'"):
        load_task(DataConfig(task="local", source="local", path=str(j), languages=["en"]))


def test_every_reader_output_is_checked_for_empty_texts():
    frame = pd.DataFrame(
        {LANG: ["en", "en"], TRANSLATION_ID: ["1", "2"], TEXT_A: ["x", ""], TEXT_B: ["", None], LABEL: [0, 1], SPLIT: ["train", "test"]}
    )
    with pytest.raises(LingtraceError, match=r"the xnli data: 1 row\(s\) with no text .*first: en, test"):
        finalize_frames(frame, TASKS["xnli"], ["en"])
    assert len(finalize_frames(frame, TASKS["xnli"], ["en"], drop_invalid=True)) == 1


def _mkdir(p):
    p.mkdir()
    return p


# ---------------------------------------------------------------- hub (fake `datasets`)


class _FakeSplit:
    def __init__(self, df):
        self.df = df

    def to_pandas(self):
        return self.df.copy()


def _fake_datasets(tables):
    mod = types.ModuleType("datasets")
    calls = []

    def load_dataset(name, lang):
        calls.append((name, lang))
        if isinstance(tables, Exception):
            raise tables
        return {split: _FakeSplit(df) for split, df in tables(lang).items()}

    mod.load_dataset = load_dataset
    mod.calls = calls
    return mod


def test_hub_xnli_pawsx_marc(monkeypatch):
    def xnli(lang):
        df = pd.DataFrame(
            {"premise": [f"{lang} p{i}" for i in range(3)], "hypothesis": ["h"] * 3, "label": [0, 1, 2]}
        )
        return {"train": df, "validation": df, "test": df}

    mod = _fake_datasets(xnli)
    monkeypatch.setitem(sys.modules, "datasets", mod)
    df = read_hub(get_task("xnli"), ["en", "de"])
    _check_frame(df)
    assert mod.calls == [("facebook/xnli", "en"), ("facebook/xnli", "de")]
    assert list(df[(df[LANG] == "de") & (df[SPLIT] == "dev")][LABEL]) == [1, 0, 0]
    assert list(df[(df[LANG] == "de") & (df[SPLIT] == "train")][TRANSLATION_ID]) == ["0", "1", "2"]

    def pawsx(lang):
        df = pd.DataFrame(
            {"id": [5, 6, 7], "sentence1": ["a", "", "c"], "sentence2": ["b", "x", "d"], "label": [1, 0, 0]}
        )
        return {"train": df, "validation": df, "test": df}

    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(pawsx))
    df = read_hub(get_task("pawsx"), ["ko"])
    assert list(df[df[SPLIT] == "train"][TRANSLATION_ID]) == ["5", "7"]

    def marc(lang):
        df = pd.DataFrame(
            {
                "id": ["r1", "r2", "r3"],
                "text": ["T1\n\nB1", "T2\n\nB2", "T3\n\nB3"],
                "label": [0, 2, 4],
                "label_text": "x",
            }
        )
        return {"train": df, "validation": df, "test": df}

    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(marc))
    df = read_hub(get_task("marc"), ["fr"])
    tr = df[df[SPLIT] == "train"]
    assert list(tr[LABEL]) == [0, 1] and list(tr[TEXT_A]) == ["T1", "T3"] and list(tr[TEXT_B]) == ["B1", "B3"]


def test_hub_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(LingtraceError, match="needs the hub extra") as e:
        read_hub(get_task("xnli"), ["en"])
    assert "pip install 'lingtrace[hub]'" in e.value.fix
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(ConnectionError("no route to host")))
    with pytest.raises(LingtraceError, match="could not load facebook/xnli .*no route to host") as e:
        read_hub(get_task("xnli"), ["en"])
    assert "data.source=official" in e.value.fix
    with pytest.raises(LingtraceError, match="language 'ko' is not available for task marc"):
        read_hub(get_task("marc"), ["ko"])


# ---------------------------------------------------------------- sampling

EMOJI_CFG = dict(
    languages=["de", "es", "fr", "ru", "zh"], train_per_lang=50, dev_per_lang=20, test_per_lang=30
)


@pytest.fixture(scope="module")
def emoji_frames():
    frames, spec = load_task(DataConfig(**EMOJI_CFG))
    return frames, spec


def _sample(emoji_frames, **kw):
    frames, spec = emoji_frames
    cfg = DataConfig(**{**EMOJI_CFG, **kw})
    return prepare_splits(frames, cfg, spec)


def _ids(df, lang):
    return list(df[df[LANG] == lang][TRANSLATION_ID])


def test_sampling_aligned_and_disjoint(emoji_frames):
    out = _sample(emoji_frames)
    assert set(out) == {"train", "dev", "test"}
    sizes = {"train": 50, "dev": 20, "test": 30}
    all_uids = []
    for split, df in out.items():
        assert list(df.columns) == EXAMPLE_COLUMNS
        assert (df.groupby(LANG).size() == sizes[split]).all() and df[LANG].nunique() == 5
        ref = set(_ids(df, "de"))
        assert all(set(_ids(df, lang)) == ref for lang in EMOJI_CFG["languages"])  # aligned translations
        assert df[UID].is_unique
        all_uids += list(df[UID])
    assert len(set(all_uids)) == len(all_uids)
    tr, dv, te = (set(out[s][TRANSLATION_ID]) for s in ("train", "dev", "test"))
    assert not (tr & dv) and not (tr & te) and not (dv & te)  # no translation leaks across splits
    # labels come with the right rows
    frames, _ = emoji_frames
    lookup = frames.set_index([LANG, TRANSLATION_ID])[LABEL]
    row = out["train"].iloc[7]
    assert lookup[(row[LANG], row[TRANSLATION_ID])] == row[LABEL]


def test_sampling_deterministic(emoji_frames):
    a, b = _sample(emoji_frames), _sample(emoji_frames)
    for s in a:
        pd.testing.assert_frame_equal(a[s], b[s])
    c = _sample(emoji_frames, seed=1)
    assert set(c["train"][TRANSLATION_ID]) != set(a["train"][TRANSLATION_ID])
    # row order of the input does not matter
    frames, spec = emoji_frames
    shuffled = frames.sample(frac=1.0, random_state=3)
    d = prepare_splits(shuffled, DataConfig(**EMOJI_CFG), spec)
    for s in a:
        pd.testing.assert_frame_equal(a[s], d[s])


def test_sampling_exclusion(emoji_frames):
    base = _sample(emoji_frames)
    ex = _sample(emoji_frames, exclude_lang="ru")
    assert "ru" not in set(ex["train"][LANG]) and "ru" not in set(ex["dev"][LANG])
    assert "ru" in set(ex["test"][LANG])
    for split in ("train", "dev"):
        kept = base[split][base[split][LANG] != "ru"].reset_index(drop=True)
        pd.testing.assert_frame_equal(kept, ex[split].reset_index(drop=True))
    pd.testing.assert_frame_equal(base["test"], ex["test"])


def test_sampling_oversampling(emoji_frames):
    base = _sample(emoji_frames)
    for pct, k in ((10, 5), (50, 25), (100, 50)):
        over = _sample(emoji_frames, extra_lang="fr", extra_pct=pct)
        tr = over["train"]
        assert (tr[LANG] == "fr").sum() == 50 + k
        assert (tr.groupby(LANG).size().drop("fr") == 50).all()
        assert tr[UID].is_unique and not tr.duplicated([LANG, TRANSLATION_ID]).any()
        base_rows = tr.merge(base["train"], how="inner")
        assert len(base_rows) == len(base["train"])  # base sample unchanged
        extra_ids = set(_ids(tr, "fr")) - set(_ids(base["train"], "fr"))
        assert len(extra_ids) == k
        assert not extra_ids & set(base["train"][TRANSLATION_ID])  # not a translation of a base example
        assert not extra_ids & (set(over["dev"][TRANSLATION_ID]) | set(over["test"][TRANSLATION_ID]))
        for s in ("dev", "test"):
            pd.testing.assert_frame_equal(base[s], over[s])
    small = _sample(emoji_frames, extra_lang="fr", extra_pct=10)
    large = _sample(emoji_frames, extra_lang="fr", extra_pct=50)
    assert set(_ids(small["train"], "fr")) <= set(_ids(large["train"], "fr"))


def test_sampling_too_few(emoji_frames):
    with pytest.raises(LingtraceError, match=r"has 1864 examples.*but 2000 are needed") as e:
        _sample(emoji_frames, train_per_lang=2000)
    assert "train_per_lang to at most 1864" in e.value.fix
    with pytest.raises(LingtraceError, match="only 864 unused ones are available") as e:
        _sample(emoji_frames, train_per_lang=1000, extra_lang="de", extra_pct=100)
    assert "extra_pct to at most 86" in e.value.fix
    with pytest.raises(LingtraceError, match="test pool"):
        _sample(emoji_frames, test_per_lang=5000)


def _split_frames():
    """A parallel task with its own dev/test splits, and a non-parallel one."""
    rows = []
    for split, n in (("train", 40), ("dev", 10), ("test", 12)):
        for lang in ("en", "de", "fr"):
            for i in range(n):
                if lang == "fr" and split == "train" and i % 4 == 0:
                    continue  # fr lacks some translations: they must not be sampled for anyone
                rows.append(
                    {
                        LANG: lang,
                        TRANSLATION_ID: str(i),
                        TEXT_A: f"{lang}{i}",
                        TEXT_B: "",
                        LABEL: i % 2,
                        SPLIT: split,
                    }
                )
    return pd.DataFrame(rows)


def test_sampling_parallel_with_splits_and_non_parallel():
    frames = _split_frames()
    cfg = DataConfig(languages=["en", "de", "fr"], train_per_lang=20, dev_per_lang=5, test_per_lang=6, seed=3)
    out = prepare_splits(frames, cfg, get_task("xnli"))
    tr = out["train"]
    assert set(_ids(tr, "en")) == set(_ids(tr, "fr")) == set(_ids(tr, "de"))
    assert all(int(i) % 4 for i in _ids(tr, "en"))
    assert (out["test"].groupby(LANG).size() == 6).all() and (out["dev"].groupby(LANG).size() == 5).all()
    with pytest.raises(LingtraceError, match=r"has 30 examples.*31 are needed") as e:
        prepare_splits(frames, DataConfig(**{**cfg.__dict__, "train_per_lang": 31}), get_task("xnli"))
    assert "lower data.train_per_lang to at most 30" in e.value.fix

    # non-parallel (marc): languages sampled independently, exclusion leaves the others unchanged
    out2 = prepare_splits(frames, cfg, get_task("marc"))
    assert (out2["train"].groupby(LANG).size() == 20).all()
    ex = prepare_splits(frames, DataConfig(**{**cfg.__dict__, "exclude_lang": "en"}), get_task("marc"))
    kept = out2["train"][out2["train"][LANG] != "en"].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, ex["train"].reset_index(drop=True))
    over = prepare_splits(
        frames, DataConfig(**{**cfg.__dict__, "extra_lang": "de", "extra_pct": 50}), get_task("marc")
    )
    assert (over["train"][LANG] == "de").sum() == 30 and over["train"][UID].is_unique
    with pytest.raises(LingtraceError, match="only 20 unused ones"):
        prepare_splits(
            frames, DataConfig(**{**cfg.__dict__, "extra_lang": "de", "extra_pct": 150}), get_task("marc")
        )


def test_sampling_unknown_language(emoji_frames):
    frames, spec = emoji_frames
    with pytest.raises(LingtraceError, match="language 'ko' is not in the data"):
        prepare_splits(frames, DataConfig(**{**EMOJI_CFG, "languages": ["de", "ko"]}), spec)


def test_stratified_order_every_prefix_is_proportional():
    """Every prefix of the stratified order holds each label within one of its proportional share."""
    import numpy as np

    from lingtrace.prepare.sampling import _stratified

    rng = np.random.default_rng(5)
    ids = [f"id{i}" for i in range(157)]
    labels = {i: int(rng.choice(4, p=[0.5, 0.3, 0.15, 0.05])) for i in ids}
    order = _stratified(ids, labels, np.random.default_rng(1))
    assert sorted(order) == sorted(ids)
    total = np.bincount([labels[i] for i in ids], minlength=4)
    counts = np.zeros(4)
    for m, i in enumerate(order, start=1):
        counts[labels[i]] += 1
        assert np.all(np.abs(counts - m * total / len(ids)) < 1), m
    assert order != _stratified(ids, labels, np.random.default_rng(2))  # still a random draw


def test_sampling_stratified(emoji_frames):
    """data.stratify: test, dev and train keep the label shares of the pool they come from (test: the
    first slice of the stratified pool, within one; dev: the next slice, within two; train: drawn
    stratified from the rest, within one), stay aligned and disjoint, and differ from the plain draw."""
    import numpy as np

    frames, _ = emoji_frames
    plain = _sample(emoji_frames)
    out = _sample(emoji_frames, stratify=True)
    pool = frames[frames[LANG] == "de"].drop_duplicates(TRANSLATION_ID)
    common = set.intersection(*(set(frames[frames[LANG] == lang][TRANSLATION_ID]) for lang in EMOJI_CFG["languages"]))
    pool = pool[pool[TRANSLATION_ID].isin(common)]
    share = np.bincount(pool[LABEL], minlength=9) / len(pool)
    carved = set()
    for split, n, slack in (("test", 30, 1), ("dev", 20, 2)):  # dev: the next slice of the same order
        df = out[split]
        for lang in EMOJI_CFG["languages"]:
            counts = np.bincount(df[df[LANG] == lang][LABEL], minlength=9)
            assert counts.sum() == n and np.all(np.abs(counts - n * share) < slack), (split, lang, counts)
        carved |= set(df[TRANSLATION_ID])
    rest = pool[~pool[TRANSLATION_ID].isin(carved)]
    rest_share = np.bincount(rest[LABEL], minlength=9) / len(rest)
    counts = np.bincount(out["train"][out["train"][LANG] == "fr"][LABEL], minlength=9)
    assert np.all(np.abs(counts - 50 * rest_share) < 1)
    tr, dv, te = (set(out[s][TRANSLATION_ID]) for s in ("train", "dev", "test"))
    assert not (tr & dv) and not (tr & te) and not (dv & te)
    for split, df in out.items():
        assert all(set(_ids(df, lang)) == set(_ids(df, "de")) for lang in EMOJI_CFG["languages"])
    assert set(plain["dev"][TRANSLATION_ID]) != dv
    for s in out:
        pd.testing.assert_frame_equal(out[s], _sample(emoji_frames, stratify=True)[s])
