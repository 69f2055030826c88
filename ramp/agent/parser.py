"""Fuzz-tolerant parsing of agent outputs and RAMP answers. Never raises, never evaluates model text.

The scanner walks tag markers (``<think>``, ``</search>``, … case-insensitive, inner spaces allowed)
left to right with at most one open block: an opening tag while a block is open closes that block
implicitly (recorded as unclosed and nested), a closing tag with no matching open block is recorded as
unmatched, text outside blocks is recorded as untagged. Result blocks are parsed like the others, so the
same function reads model-only text (where any ``<result>`` is stray) and whole trajectories.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Every marker the parser treats as a tag; ``ramp.agent.protocol`` neutralises exactly these in results.
PROTOCOL_TAG = re.compile(r"<\s*(/?)\s*(think|search|result|answer)\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Block:
    tag: str  # think | search | result | answer
    content: str
    closed: bool


@dataclass(frozen=True)
class ParsedResponse:
    blocks: tuple[Block, ...] = ()
    untagged_text: str = ""  # non-whitespace text outside every block, joined with spaces
    unmatched_closes: int = 0  # closing tags with no open block
    nested: bool = False  # an opening tag appeared inside an open block
    trailing_text: str = ""  # untagged text after the last answer block

    @property
    def thinks(self) -> list[str]:
        return [b.content.strip() for b in self.blocks if b.tag == "think"]

    @property
    def searches(self) -> list[str]:
        """Queries of the closed search blocks, in order."""
        return [b.content.strip() for b in self.blocks if b.tag == "search" and b.closed]

    @property
    def answers(self) -> list[str]:
        return [b.content.strip() for b in self.blocks if b.tag == "answer"]

    @property
    def answer(self) -> str | None:
        """Text of the last answer block (closed or running to the end of the text), or None."""
        answers = self.answers
        return answers[-1] if answers else None

    @property
    def answer_closed(self) -> bool:
        last = [b for b in self.blocks if b.tag == "answer"]
        return bool(last) and last[-1].closed

    @property
    def all_closed(self) -> bool:
        return all(b.closed for b in self.blocks) and self.unmatched_closes == 0

    @property
    def stray_result(self) -> bool:
        """A result tag in text the model wrote (only the environment may write results)."""
        return any(b.tag == "result" for b in self.blocks)


def parse_response(text: str) -> ParsedResponse:
    """Split ``text`` into tagged blocks and record every irregularity (see the module docstring)."""
    if not isinstance(text, str):
        return ParsedResponse()
    blocks: list[Block] = []
    untagged: list[str] = []
    unmatched = 0
    nested = False
    open_tag: str | None = None
    open_start = 0
    cursor = 0
    trailing = ""
    for match in PROTOCOL_TAG.finditer(text):
        closing, tag = match.group(1) == "/", match.group(2).lower()
        between = text[cursor : match.start()]
        if open_tag is None and between.strip():
            untagged.append(between.strip())
            if blocks and blocks[-1].tag == "answer":
                trailing += between
        if not closing:
            if open_tag is not None:
                nested = True
                blocks.append(Block(open_tag, text[open_start : match.start()], closed=False))
            open_tag, open_start = tag, match.end()
            trailing = ""
        elif open_tag == tag:
            blocks.append(Block(tag, text[open_start : match.start()], closed=True))
            open_tag = None
        else:
            unmatched += 1
            if open_tag is not None:
                # e.g. "<search>q</think>": keep the block running; the stray close is only counted.
                continue
        cursor = match.end()
    if open_tag is not None:
        blocks.append(Block(open_tag, text[open_start:], closed=False))
    else:
        rest = text[cursor:]
        if rest.strip():
            untagged.append(rest.strip())
            if blocks and blocks[-1].tag == "answer":
                trailing += rest
    return ParsedResponse(
        blocks=tuple(blocks),
        untagged_text=" ".join(untagged),
        unmatched_closes=unmatched,
        nested=nested,
        trailing_text=trailing.strip(),
    )


def extract_last_search(text: str) -> str | None:
    """Query of the last closed search block, or None (also for an empty query)."""
    searches = parse_response(text).searches
    return (searches[-1] or None) if searches else None


# A fill's number at the start of a line: "[1]", "[mask1]", "[mask 1]:", "(1)", "1.", "1)", "1:", "mask 1:".
_NUMBER_PREFIX = re.compile(
    r"^\s*(?:\[\s*(?:mask\s*[_-]?\s*)?(\d{1,4})\s*\]|\(\s*(\d{1,4})\s*\)"
    r"|(?:mask\s*[_-]?\s*)?(\d{1,4})\s*[.):\]]|mask\s*[_-]?\s*(\d{1,4})\b)\s*[:=\-–]?\s*",
    re.IGNORECASE,
)
# Bracketed numbers inside a line, for several fills on one line: "[1] Paris [2] France".
_INLINE_NUMBER = re.compile(r"\[\s*(?:mask\s*[_-]?\s*)?(\d{1,4})\s*\]", re.IGNORECASE)
_DELIMITERS = re.compile(r"\s*[;|]\s*")
_WRAPPING = " \t\"'`*"


def _clean_fill(text: str) -> str:
    return text.strip().strip(_WRAPPING).strip()


def _numbered_items(line: str, num_masks: int) -> list[tuple[int | None, str]]:
    """One line -> (number or None, fill) items; several bracketed numbers split the line.

    A bare leading number outside ``1..num_masks`` ("1990.") is part of the fill; a marked one
    ("[5] x" for two masks) is an extra fill, dropped by the caller.
    """
    inline = list(_INLINE_NUMBER.finditer(line))
    if len(inline) > 1 and not line[: inline[0].start()].strip():
        items: list[tuple[int | None, str]] = []
        for cur, nxt in zip(inline, [*inline[1:], None], strict=True):
            end = nxt.start() if nxt is not None else len(line)
            items.append((int(cur.group(1)), line[cur.end() : end].lstrip(":=-– ")))
        return items
    match = _NUMBER_PREFIX.match(line)
    if match:
        number = int(next(g for g in match.groups() if g is not None))
        if 1 <= number <= num_masks:
            return [(number, line[match.end() :])]
        if match.group(3) is None:
            return [(number, "")]  # an explicitly marked extra fill: dropped
    return [(None, line)]


def parse_mask_fills(answer_text: str | None, num_masks: int) -> list[str]:
    """Exactly ``num_masks`` fills from an answer, ``""`` where a fill is missing. Never raises.

    Numbered lines go to their number's slot (first one wins; out-of-range numbers are dropped);
    unnumbered lines fill the remaining slots in order. When there are fewer lines than masks, lines
    are also split on ``;`` and ``|``.
    """
    if num_masks <= 0:
        return []
    if not isinstance(answer_text, str):
        return [""] * num_masks
    lines = [line for line in answer_text.splitlines() if line.strip()]
    items = [item for line in lines for item in _numbered_items(line, num_masks)]
    if len(items) < num_masks:
        split: list[tuple[int | None, str]] = []
        for number, fill in items:
            parts = [p for p in _DELIMITERS.split(fill) if p.strip()] or [fill]
            split += [(number, parts[0])] + [(None, p) for p in parts[1:]]
        items = split
    fills: list[str | None] = [None] * num_masks
    for number, fill in items:
        if number is not None and 1 <= number <= num_masks and fills[number - 1] is None:
            fills[number - 1] = _clean_fill(fill)
    for number, fill in items:
        if number is None and None in fills:
            fills[fills.index(None)] = _clean_fill(fill)
    return [f if f is not None else "" for f in fills]
