"""A minimal ctypes driver for the eSpeak NG library shipped in the `espeakng-loader` wheel.

The library keeps global state (one voice, one set of parameters, one callback), so a process
owns at most one `ESpeak`; parallel generation uses one worker process per core, each creating
its own. eSpeak also keeps internal state between utterances (its random generator is re-seeded
per utterance here, but other state is not resettable), so callers that need bit-exact output
must synthesize the same utterances in the same order within one fresh process —
`fambench.data.synth` does exactly that.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass

import numpy as np

from fambench.errors import DataError

log = logging.getLogger(__name__)

# Values from espeak-ng/speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_AUTO = 0
_EE_OK = 0
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_PARAM_WORDGAP = 7

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class Voice:
    """One eSpeak voice setting: a language voice, a variant and prosody parameters.

    `name` is what `espeak_SetVoiceByName` takes, e.g. ``"en-us+m3"``; `rate` is in words per
    minute, `pitch` and `pitch_range` are eSpeak's 0–100 scales.
    """

    name: str
    rate: int = 160
    pitch: int = 50
    pitch_range: int = 50
    word_gap: int = 0


class ESpeak:
    """The process-wide eSpeak NG engine in synchronous mode (samples collected via callback)."""

    _instance: ESpeak | None = None

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise DataError("the espeakng-loader package is not installed") from exc
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetVoiceByName.restype = ctypes.c_int
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_SetParameter.restype = ctypes.c_int
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._lib.espeak_Synth.restype = ctypes.c_int
        self._lib.espeak_Synchronize.restype = ctypes.c_int
        data_path = espeakng_loader.get_data_path().encode()
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if rate <= 0:
            raise DataError(f"eSpeak NG failed to initialise with data at {data_path.decode()}")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes would free the trampoline while C still holds it.
        self._callback = _SYNTH_CALLBACK(self._collect)
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._voice: str | None = None

    @classmethod
    def loaded(cls) -> bool:
        """Whether this process has initialised the engine (its state then persists)."""
        return cls._instance is not None

    @classmethod
    def get(cls) -> ESpeak:
        """The process's engine, initialised on first use."""
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _collect(self, samples, n_samples, _events) -> int:
        if n_samples > 0 and samples:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(n_samples,)).copy())
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, voice: Voice, seed: int = 0) -> np.ndarray:
        """Speak `text` with `voice`; returns int16 samples at `self.sample_rate`.

        `seed` seeds eSpeak's random generator (used for breath and aspiration noise).
        """
        if voice.name != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.name.encode()) != _EE_OK:
                raise DataError(f"eSpeak NG has no voice named {voice.name!r}")
            self._voice = voice.name
        for param, value in (
            (_PARAM_RATE, voice.rate),
            (_PARAM_PITCH, voice.pitch),
            (_PARAM_RANGE, voice.pitch_range),
            (_PARAM_VOLUME, 100),
            (_PARAM_WORDGAP, voice.word_gap),
        ):
            self._lib.espeak_SetParameter(param, int(value), 0)
        # eSpeak seeds its own generator from the clock; seed it for reproducible noise.
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        encoded = text.encode("utf-8") + b"\0"
        self._chunks = []
        status = self._lib.espeak_Synth(
            encoded, len(encoded), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_AUTO, None, None
        )
        if status != _EE_OK:
            raise DataError(f"eSpeak NG failed (status {status}) on text {text[:40]!r}")
        self._lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._chunks).astype(np.int16, copy=False)
