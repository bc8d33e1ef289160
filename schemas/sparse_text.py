"""The paper's human-readable sparse form of one user's heatmap (section 3.1).

``"2,10,28:5000;100,20,25:6000"`` means: on relative day 2 at hour 10, channel 28 has value
5000; on day 100 at hour 20, channel 25 has value 6000. Cells are separated by ``;``, the
coordinates by ``,`` and the value follows ``:``. Spaces are tolerated on input, never written.
Columnar arrays stay the machine format; this text is for people and interchange.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple


class Cell(NamedTuple):
    day: int
    hour: int
    channel: int
    value: float


def format_value(value: float) -> str:
    """Shortest faithful text for a value: integers without a decimal point."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return repr(value)


def format_cells(cells: Iterable[Cell | tuple]) -> str:
    return ";".join(f"{int(d)},{int(h)},{int(c)}:{format_value(v)}" for d, h, c, v in cells)


def parse_cells(text: str, days: int | None = None, channels: int | None = None) -> list[Cell]:
    """Parse the text form; bounds are checked when ``days``/``channels`` are given."""
    cells: list[Cell] = []
    for position, part in enumerate(p for p in text.split(";") if p.strip()):
        coords, sep, value = part.partition(":")
        pieces = coords.split(",")
        if not sep or len(pieces) != 3:
            raise ValueError(f"cell {position} {part.strip()!r}: expected 'day,hour,channel:value'")
        try:
            day, hour, channel = (int(p) for p in pieces)
            number = float(value)
        except ValueError:
            raise ValueError(f"cell {position} {part.strip()!r}: coordinates must be integers "
                             "and the value a number") from None
        if not 0 <= hour < 24:
            raise ValueError(f"cell {position} {part.strip()!r}: hour {hour} is outside 0..23")
        if day < 0 or (days is not None and day >= days):
            raise ValueError(f"cell {position} {part.strip()!r}: day {day} is outside the "
                             f"{days}-day window")
        if channel < 0 or (channels is not None and channel >= channels):
            raise ValueError(f"cell {position} {part.strip()!r}: channel {channel} is outside "
                             f"0..{(channels or 0) - 1}")
        cells.append(Cell(day, hour, channel, number))
    return cells
