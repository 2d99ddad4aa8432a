"""Transcripts of the low-entropy synthetic tasks: spoken digit strings and a command grammar.

Both are named for what they are: tasks with a small closed vocabulary, on which a small model
learns to recognise speech within minutes. Each transcript comes from the caller's seeded
generator, so a corpus is reproducible; words are uppercase A–Z with apostrophes, the
LibriSpeech transcript alphabet.
"""

from __future__ import annotations

import numpy as np

DIGITS = ("ZERO", "OH", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")

_NUMBERS = (
    "ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE FIFTEEN TWENTY THIRTY FORTY "
    "FIFTY SIXTY SEVENTY EIGHTY NINETY HUNDRED"
).split()
_ROOMS = (
    "KITCHEN BEDROOM BATHROOM GARAGE HALLWAY OFFICE GARDEN BASEMENT ATTIC STUDY NURSERY "
    "LIBRARY CELLAR PORCH LOUNGE"
).split()
_DEVICES = (
    "LIGHTS LAMP HEATER FAN RADIO TELEVISION OVEN KETTLE DISHWASHER SPEAKER PRINTER "
    "THERMOSTAT ALARM BLINDS CAMERA COMPUTER"
).split()
_OPENABLE = "DOOR WINDOW CURTAINS GATE SHUTTERS CUPBOARD DRAWER FRIDGE".split()
_MEDIA = "MUSIC NEWS PODCAST PLAYLIST SONG ALBUM AUDIOBOOK STATION VIDEO MOVIE".split()
_NAMES = (
    "ALICE BOB CAROL DAVID EMMA FRANK GRACE HENRY ISABEL JACK KATE LUCY MARTIN NORA OLIVER "
    "PETER RACHEL SAM THOMAS VICTOR WENDY MOTHER FATHER GRANDMA DOCTOR"
).split()
_CITIES = (
    "LONDON PARIS BERLIN MADRID ROME DUBLIN BOSTON CHICAGO DENVER SEATTLE TORONTO SYDNEY "
    "TOKYO CAIRO LIMA OSLO VIENNA PRAGUE ATHENS MOSCOW"
).split()
_DAYS = ("TODAY TOMORROW TONIGHT MONDAY TUESDAY WEDNESDAY THURSDAY FRIDAY SATURDAY SUNDAY").split()
_DIRECTIONS = "LEFT RIGHT UP DOWN FORWARD BACK".split()
_UNITS = "STEPS INCHES FEET METERS DEGREES MINUTES SECONDS".split()
_COLOURS = "RED GREEN BLUE YELLOW WHITE ORANGE PURPLE PINK".split()
_OBJECTS = "CHAIR TABLE BOX ROBOT CURSOR CAMERA ARM WHEEL BALL".split()


def _one(rng: np.random.Generator, words: tuple[str, ...] | list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _please(rng: np.random.Generator, command: str) -> str:
    roll = rng.random()
    if roll < 0.15:
        return f"PLEASE {command}"
    if roll < 0.25:
        return f"{command} PLEASE"
    return command


def _command(rng: np.random.Generator) -> str:
    kind = int(rng.integers(8))
    if kind == 0:
        state = _one(rng, ("ON", "OFF"))
        return f"TURN {state} THE {_one(rng, _DEVICES)} IN THE {_one(rng, _ROOMS)}"
    if kind == 1:
        return (
            f"SET THE {_one(rng, _DEVICES)} IN THE {_one(rng, _ROOMS)} "
            f"TO {_one(rng, _NUMBERS)} PERCENT"
        )
    if kind == 2:
        verb = _one(rng, ("OPEN", "CLOSE", "LOCK", "UNLOCK"))
        return f"{verb} THE {_one(rng, _OPENABLE)} IN THE {_one(rng, _ROOMS)}"
    if kind == 3:
        verb = _one(rng, ("PLAY", "PAUSE", "STOP", "SKIP", "REPEAT"))
        return f"{verb} THE {_one(rng, _MEDIA)}"
    if kind == 4:
        return (
            f"MOVE THE {_one(rng, _COLOURS)} {_one(rng, _OBJECTS)} {_one(rng, _DIRECTIONS)} "
            f"BY {_one(rng, _NUMBERS)} {_one(rng, _UNITS)}"
        )
    if kind == 5:
        return f"CALL {_one(rng, _NAMES)} AT {_one(rng, _NUMBERS)} O'CLOCK {_one(rng, _DAYS)}"
    if kind == 6:
        return f"WHAT IS THE WEATHER IN {_one(rng, _CITIES)} {_one(rng, _DAYS)}"
    return f"REMIND {_one(rng, ('ME', *_NAMES))} TO CALL {_one(rng, _NAMES)} {_one(rng, _DAYS)}"


def command_sentence(rng: np.random.Generator) -> str:
    """One to three commands of the grammar, joined by AND or THEN."""
    parts = [_please(rng, _command(rng)) for _ in range(1 + int(rng.integers(3)))]
    text = parts[0]
    for part in parts[1:]:
        text += f" {_one(rng, ('AND', 'THEN'))} {part}"
    return text


def digit_string(rng: np.random.Generator, min_digits: int, max_digits: int) -> str:
    """``min_digits``..``max_digits`` digits, uniformly drawn (zero as ZERO or OH)."""
    n = int(rng.integers(min_digits, max_digits + 1))
    return " ".join(DIGITS[i] for i in rng.integers(len(DIGITS), size=n))
