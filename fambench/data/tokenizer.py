"""CTC tokenizers: characters and a sentencepiece unigram model, both with blank id 0.

Text is LibriSpeech-style: uppercase A–Z, apostrophe, single spaces. Both tokenizers give exact
round trips, ``decode(encode(t)) == t``, on such text, and reject any other character with a
DataError naming it. Each saves to and loads from a directory (``tokenizer.json``, plus
``spm.model`` for sentencepiece), which is how a run directory keeps its tokenizer.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from fambench.errors import ConfigError, DataError
from fambench.fileio import write_bytes, write_json

log = logging.getLogger(__name__)

ALPHABET = " '" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""The transcript alphabet, in character-tokenizer id order (ids 1..28)."""
BLANK_ID = 0
TOKENIZER_FILE = "tokenizer.json"
SPM_FILE = "spm.model"
_ALLOWED = frozenset(ALPHABET)


@runtime_checkable
class Tokenizer(Protocol):
    """What the trainer and decoder need from a tokenizer."""

    blank_id: int
    vocab_size: int  # including the blank

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def to_json(self) -> dict: ...

    def save(self, directory: Path) -> None: ...


def _check_text(text: str) -> None:
    bad = set(text) - _ALLOWED
    if bad:
        raise DataError(
            f"text has characters outside A-Z, apostrophe and space: {''.join(sorted(bad))!r} "
            f"in {text[:60]!r}"
        )


class CharTokenizer:
    """Blank = 0, space = 1, apostrophe = 2, A–Z = 3..28 (vocab_size 29)."""

    blank_id = BLANK_ID
    vocab_size = len(ALPHABET) + 1

    def __init__(self) -> None:
        self._ids = {ch: i + 1 for i, ch in enumerate(ALPHABET)}

    def encode(self, text: str) -> list[int]:
        _check_text(text)
        return [self._ids[ch] for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        """Characters of the ids; blanks are skipped, so raw CTC paths decode too."""
        chars = []
        for i in ids:
            i = int(i)
            if i == BLANK_ID:
                continue
            if not 0 < i < self.vocab_size:
                raise ValueError(f"token id {i} outside the character vocabulary 0..28")
            chars.append(ALPHABET[i - 1])
        return "".join(chars)

    def to_json(self) -> dict:
        return {"kind": "char", "vocab_size": self.vocab_size, "blank_id": self.blank_id}

    def save(self, directory: Path) -> None:
        """Write ``tokenizer.json`` (FileWriteError naming the file when that fails)."""
        write_json(Path(directory) / TOKENIZER_FILE, self.to_json(), sort_keys=True)

    @classmethod
    def load(cls, directory: Path) -> CharTokenizer:
        del directory  # nothing beyond the kind to read
        return cls()


class SentencePieceTokenizer:
    """A sentencepiece unigram model; our id = sentencepiece id + 1, so 0 stays the blank.

    Every character of the alphabet is forced into the model (``required_chars``), so any
    valid transcript encodes without unknown pieces, even ones with letters the training text
    never had.
    """

    blank_id = BLANK_ID

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self._sp.get_piece_size() + 1

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, model_dir: Path | None = None
    ) -> SentencePieceTokenizer:
        """Train on `texts`; `vocab_size` counts the blank.

        On a corpus too small for `vocab_size` the model comes out smaller (a warning says so)
        rather than failing; a size below the alphabet is raised to it.
        """
        import sentencepiece as spm

        sentences = [" ".join(t.split()) for t in texts]
        sentences = [s for s in sentences if s]
        if not sentences:
            raise DataError("cannot train a sentencepiece model: no training transcripts")
        for s in sentences:
            _check_text(s)
        minimum = len(ALPHABET) + 1  # pieces: unk, ▁, apostrophe, A-Z
        pieces = vocab_size - 1
        if pieces < minimum:
            log.warning(
                "sentencepiece vocab_size %d is below the alphabet; using %d",
                vocab_size,
                minimum + 1,
            )
            pieces = minimum
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=model,
                vocab_size=pieces,
                model_type="unigram",
                character_coverage=1.0,
                required_chars=ALPHABET.replace(" ", ""),
                normalization_rule_name="identity",
                unk_id=0,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                hard_vocab_limit=False,
                num_threads=1,  # deterministic
                minloglevel=2,
            )
        except RuntimeError as exc:
            raise DataError(f"sentencepiece training failed: {exc}") from exc
        tokenizer = cls(model.getvalue())
        if tokenizer.vocab_size < vocab_size:
            log.warning(
                "the training text supports only %d sentencepiece tokens, not %d",
                tokenizer.vocab_size,
                vocab_size,
            )
        if model_dir is not None:
            tokenizer.save(model_dir)
        return tokenizer

    def encode(self, text: str) -> list[int]:
        _check_text(text)
        return [i + 1 for i in self._sp.encode(text)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids; blanks are skipped."""
        pieces = []
        for i in ids:
            i = int(i)
            if i == BLANK_ID:
                continue
            if not 0 < i < self.vocab_size:
                raise ValueError(f"token id {i} outside the vocabulary 0..{self.vocab_size - 1}")
            pieces.append(i - 1)
        return self._sp.decode(pieces)

    def pieces(self, text: str) -> list[str]:
        """The subword pieces of `text` (for inspection)."""
        return self._sp.encode(text, out_type=str)

    def to_json(self) -> dict:
        return {
            "kind": "sentencepiece",
            "vocab_size": self.vocab_size,
            "blank_id": self.blank_id,
            "model": SPM_FILE,
        }

    def save(self, directory: Path) -> None:
        """Write ``spm.model`` then ``tokenizer.json`` (FileWriteError naming a failed file)."""
        directory = Path(directory)
        write_bytes(directory / SPM_FILE, self._proto)
        write_json(directory / TOKENIZER_FILE, self.to_json(), sort_keys=True)

    @classmethod
    def load(cls, directory: Path) -> SentencePieceTokenizer:
        path = Path(directory) / SPM_FILE
        try:
            return cls(path.read_bytes())
        except OSError as exc:
            raise DataError(f"cannot read sentencepiece model {path}: {exc.strerror}") from exc
        except RuntimeError as exc:
            raise DataError(f"corrupt sentencepiece model {path}") from exc


_KINDS = {"char": CharTokenizer, "sentencepiece": SentencePieceTokenizer}


def load_tokenizer(directory: Path) -> CharTokenizer | SentencePieceTokenizer:
    """Load whichever tokenizer `save` wrote into `directory`."""
    path = Path(directory) / TOKENIZER_FILE
    try:
        meta = json.loads(path.read_text())
    except OSError as exc:
        raise DataError(f"no tokenizer at {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON") from exc
    kind = meta.get("kind")
    if kind not in _KINDS:
        raise DataError(f"{path}: unknown tokenizer kind {kind!r} (known: char, sentencepiece)")
    return _KINDS[kind].load(directory)


def build_tokenizer(
    kind: str, texts: Iterable[str] = (), vocab_size: int = 256
) -> CharTokenizer | SentencePieceTokenizer:
    """`"char"` or `"sentencepiece"` (trained on `texts`); the workloads' single entry point."""
    if kind == "char":
        return CharTokenizer()
    if kind in ("sentencepiece", "spm", "unigram"):
        return SentencePieceTokenizer.train(texts, vocab_size)
    raise ConfigError(f"unknown tokenizer {kind!r} (choose char or sentencepiece)")
