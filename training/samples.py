"""The data types between a dataset (training.data) and the model's prompt builder (training.model).

They live here, not in either of those modules, so that neither imports the other for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Turn:
    role: str  # "system" | "user" | "assistant"
    text: str = ""  # user: the typed text or the instruction around the audio; assistant: the reply
    audio: int | None = None  # index of the clip (in the sample's clip list) when spoken
    audio_first: bool = False
    transcript: str = ""  # spoken turn: what was said (used by the KL teacher)


@dataclass
class Sample:
    """One training sequence: token pieces and audio slots, with the positions that carry loss."""

    ids: list[int] = field(default_factory=list)  # -1 marks an audio slot (one per clip, expanded later)
    train: list[bool] = field(default_factory=list)
    clips: list[int] = field(default_factory=list)  # clip index for each -1 in `ids`, in order
