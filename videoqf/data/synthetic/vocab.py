"""The closed vocabulary of the synthetic diagnostic world: shapes, colours, actions, sounds.

Kept deliberately small (3 shapes, 4 colours, 6 actions, 3 sounds) and visually/acoustically far
apart (saturated colours on a dark background, tones two octaves apart) so a tiny model with a frozen
random-weight ViT can learn it in minutes on a CPU; what it cannot shortcut is order and sound.
"""
from __future__ import annotations

SHAPES = ("square", "circle", "triangle")

# saturated RGB, far apart in every channel pair so H.264's 4:2:0 chroma keeps them distinct
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 30),
}
BACKGROUND = (40, 40, 40)

DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
ACTIONS = ("appears", "moves", "turns")  # "moves" takes a direction: 6 distinct actions in all

# name -> (kind, frequency in Hz); "noise" ignores the frequency
SOUNDS: dict[str, tuple[str, float]] = {
    "low hum": ("tone", 200.0),
    "high beep": ("beeps", 1500.0),
    "noise burst": ("noise", 0.0),
}
SILENCE_PHRASE = "in silence"  # caption clause of a clip without an audio track
