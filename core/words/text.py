"""Text cut to fit a platform's message limit, at paragraphs, then lines, sentences, words, characters."""
from __future__ import annotations

from collections.abc import Callable

SEPARATORS = ("\n\n", "\n", ". ", " ", "")


def split_text(text: str, limit: int, *, size: Callable[[str], int] = len,
               units: Callable[[str], list[str]] = list) -> list[str]:
    """Pieces of `text` that each measure at most `limit` by `size` (the platform's count: characters,
    UTF-16 units after escaping…), cut at the coarsest break that fits; none for blank text.

    units: what an unbroken run may be cut into at the last resort (characters; never inside an escape)."""
    text = text.strip()
    if not text:
        return []
    return [p.strip() for p in _split(text, limit, SEPARATORS, size, units) if p.strip()]


def _split(text: str, limit: int, seps: tuple[str, ...], size: Callable[[str], int],
           units: Callable[[str], list[str]]) -> list[str]:
    if size(text) <= limit:
        return [text]
    sep, finer = seps[0], seps[1:]
    chunks: list[str] = []
    cur, cur_size = "", 0
    if sep == "":  # one unbroken run longer than a message: cut it between units
        for unit in units(text):
            s = size(unit)
            if cur and cur_size + s > limit:
                chunks.append(cur)
                cur, cur_size = "", 0
            cur, cur_size = cur + unit, cur_size + s
        return chunks + [cur] if cur else chunks
    parts = text.split(sep)
    # each piece keeps its separator, so a cut between sentences keeps the period (only whitespace is lost)
    for piece in [p + sep for p in parts[:-1]] + parts[-1:]:
        piece_size = size(piece)
        if cur and cur_size + piece_size <= limit:
            cur, cur_size = cur + piece, cur_size + piece_size
            continue
        if cur:
            chunks.append(cur)
        if piece_size <= limit:
            cur, cur_size = piece, piece_size
        else:
            sub = _split(piece, limit, finer, size, units)
            chunks.extend(sub[:-1])
            cur, cur_size = sub[-1], size(sub[-1])
    if cur:
        chunks.append(cur)
    return chunks
