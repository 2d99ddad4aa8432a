"""Character and sentencepiece tokenizers: blank id, exact round trips, save/load."""

from __future__ import annotations

import json

import pytest

from fambench.data.librispeech import load_manifest
from fambench.data.tokenizer import (
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    build_tokenizer,
    load_tokenizer,
)
from fambench.errors import ConfigError, DataError, FileWriteError

LIBRISPEECH_STYLE = [
    "CHAPTER ONE MISSUS RACHEL LYNDE IS SURPRISED",
    "I DON'T KNOW WHAT YOU'RE TALKING ABOUT SAID THE KING'S DAUGHTER",
    "HE'D HAVE BEEN THERE BY TEN O'CLOCK IF THE HORSES HADN'T BOLTED",
    "QUIXOTIC JAZZ WALTZ VEX'D",
    "A",
    "",
]


@pytest.fixture(scope="module")
def transcripts(synth_corpus):
    return {
        s: load_manifest(synth_corpus, s)["transcript"].tolist()
        for s in ("train-synth", "dev-synth", "test-synth")
    }


def test_char_tokenizer_ids_and_round_trip(transcripts):
    tok = CharTokenizer()
    assert isinstance(tok, Tokenizer)
    assert (tok.blank_id, tok.vocab_size) == (0, 29)
    assert tok.encode(" 'AZ") == [1, 2, 3, 28]
    for text in LIBRISPEECH_STYLE + transcripts["dev-synth"]:
        ids = tok.encode(text)
        assert len(ids) == len(text) and 0 not in ids
        assert tok.decode(ids) == text
    assert tok.decode([0, 10, 0, 0, 11, 0]) == "HI"  # blanks are skipped


def test_sentencepiece_round_trips_exactly_and_never_emits_blank(transcripts):
    tok = SentencePieceTokenizer.train(transcripts["train-synth"], vocab_size=64)
    assert isinstance(tok, Tokenizer)
    assert tok.blank_id == 0 and 30 <= tok.vocab_size <= 64
    unseen = transcripts["dev-synth"] + transcripts["test-synth"] + LIBRISPEECH_STYLE
    for text in transcripts["train-synth"] + unseen:
        ids = tok.encode(text)
        assert all(0 < i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    # Subwords: fewer tokens than characters on typical text.
    total_ids = sum(len(tok.encode(t)) for t in transcripts["dev-synth"])
    assert total_ids < 0.9 * sum(len(t) for t in transcripts["dev-synth"])


def test_sentencepiece_does_not_fail_on_a_tiny_corpus():
    texts = ["HELLO WORLD", "IT'S A TEST"]
    tok = SentencePieceTokenizer.train(texts, vocab_size=5000)
    assert 30 <= tok.vocab_size < 5000
    small = SentencePieceTokenizer.train(texts, vocab_size=3)  # below the alphabet: raised
    for t in (tok, small):
        assert t.decode(t.encode("ZEBRA QUIZ JUMPS OVER IT'S")) == "ZEBRA QUIZ JUMPS OVER IT'S"


def test_sentencepiece_training_is_deterministic(transcripts):
    a = SentencePieceTokenizer.train(transcripts["train-synth"], vocab_size=48)
    b = SentencePieceTokenizer.train(transcripts["train-synth"], vocab_size=48)
    text = transcripts["dev-synth"][0]
    assert a.vocab_size == b.vocab_size and a.encode(text) == b.encode(text)


@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_save_and_load_from_a_directory(transcripts, tmp_path, kind):
    tok = build_tokenizer(kind, transcripts["train-synth"], vocab_size=40)
    tok.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
    assert loaded.to_json() == tok.to_json()
    for text in transcripts["test-synth"]:
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.decode(tok.encode(text)) == text


@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_saved_files_are_exactly_the_documented_format(transcripts, tmp_path, kind):
    tok = build_tokenizer(kind, transcripts["train-synth"], vocab_size=40)
    tok.save(tmp_path)
    expected = {"tokenizer.json"} | ({"spm.model"} if kind == "sentencepiece" else set())
    assert {p.name for p in tmp_path.iterdir()} == expected  # no temporary files left
    # Byte-identical to what fambench has always written: sorted keys, indent 2, newline.
    text = json.dumps(tok.to_json(), indent=2, sort_keys=True) + "\n"
    assert (tmp_path / "tokenizer.json").read_bytes() == text.encode()
    if kind == "sentencepiece":
        assert (tmp_path / "spm.model").read_bytes() == tok._proto


@pytest.mark.parametrize(
    "kind, first_file", [("char", "tokenizer.json"), ("sentencepiece", "spm.model")]
)
def test_save_where_the_directory_cannot_be_made_is_a_file_write_error(tmp_path, kind, first_file):
    # A regular file where a directory should be: mkdir fails, even for root.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    tok = build_tokenizer(kind, ["HELLO WORLD", "IT'S A TEST"], vocab_size=40)
    with pytest.raises(FileWriteError) as caught:
        tok.save(blocker / "tok")
    assert str(caught.value).startswith(f"cannot write {blocker / 'tok' / first_file}:")
    assert [p.name for p in tmp_path.iterdir()] == ["blocker"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failed_tokenizer_write_leaves_no_temp_file(tmp_path):
    # tokenizer.json taken by a directory: the temporary file is written, the rename fails.
    (tmp_path / "tokenizer.json").mkdir()
    with pytest.raises(FileWriteError, match=f"cannot write {tmp_path / 'tokenizer.json'}"):
        CharTokenizer().save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]
    assert (tmp_path / "tokenizer.json").is_dir()


@pytest.mark.parametrize(
    "tok", [CharTokenizer(), SentencePieceTokenizer.train(["A B C"], vocab_size=40)]
)
def test_text_outside_the_alphabet_is_refused(tok):
    with pytest.raises(DataError, match="outside A-Z"):
        tok.encode("hello")
    with pytest.raises(DataError, match="'01' in 'ROOM 101'"):
        tok.encode("ROOM 101")


def test_bad_tokenizer_requests_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown tokenizer 'bpe'"):
        build_tokenizer("bpe")
    with pytest.raises(DataError, match="no tokenizer at"):
        load_tokenizer(tmp_path)
    with pytest.raises(DataError, match="no training transcripts"):
        SentencePieceTokenizer.train(["", "  "], vocab_size=40)
    with pytest.raises(ValueError, match="outside"):
        CharTokenizer().decode([29])
