"""MediaWiki markup -> plain prose, with mwparserfromhell (MIT).

Dropped: templates, template arguments, comments, ``<ref>`` and other non-prose tags, tables, files and
images, categories, interwiki/interlanguage links, headings (text and markup) and the boilerplate sections
(References, External links, See also ...). Kept: text, link text (or the link target when it has none),
the contents of formatting tags (bold, italic, ``<span>`` ...), decoded HTML entities. Paragraphs and list
items stay on separate lines, so the sentence splitter sees them as boundaries.

Inline value templates are rendered instead of dropped, so sentences keep their numbers and dates:
``convert``/``cvt`` (the value and its unit, ranges too: ``5–10 km``; no conversion), ``as of``,
``val``, ``frac``, ``circa``, ``floruit``, ``US$``, the date templates (``birth date and age``,
``death date``, ``start date``, ``dts`` ...: "May 17, 1950", or "17 May 1950" with ``df=y``),
``lang``/``lang-xx`` (the foreign text), wrappers (``nowrap``, ``small`` ...) and dashes.
"""

from __future__ import annotations

import html
import re

import mwparserfromhell
from mwparserfromhell.nodes import (
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Node,
    Tag,
    Template,
    Text,
    Wikilink,
)

DROPPED_TAGS = frozenset(
    {
        "ref",
        "references",
        "table",
        "gallery",
        "math",
        "chem",
        "score",
        "timeline",
        "imagemap",
        "syntaxhighlight",
        "source",
        "pre",
        "nowiki",
        "templatestyles",
        "graph",
        "mapframe",
        "maplink",
        "hiero",
        "noinclude",
        "includeonly",
        "onlyinclude",
        "div",
    }
)
LINE_BREAK_TAGS = frozenset({"br", "li", "dt", "dd", "p"})
DROPPED_LINK_NAMESPACES = frozenset(
    {"file", "image", "media", "category", "wikt", "wiktionary", "s", "q", "commons", "wp", "wikipedia"}
)
BOILERPLATE_SECTIONS = frozenset(
    {
        "references",
        "external links",
        "see also",
        "further reading",
        "notes",
        "bibliography",
        "sources",
        "footnotes",
        "citations",
        "notes and references",
    }
)
_INTERWIKI = re.compile(r"^:?[a-z]{2,3}(?:-[a-z]+)?:", re.IGNORECASE)
_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)
_REF = re.compile(r"<ref\b[^>/]*/>|<ref\b[^>]*>.*?</ref\s*>", re.DOTALL | re.IGNORECASE)
_LEFTOVER_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_LEFTOVER_LINK = re.compile(r"\[\[(?:[^\[\]|]*\|)?([^\[\]]*)\]\]")
_LEFTOVER_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_SPACES = re.compile(r"[ \t\u00a0]+")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:!?)\]])")
_SPACE_AFTER_OPEN = re.compile(r"([(\[]) +")
_EMPTY_BRACKETS = re.compile(r"\s*\((?:[\s,;:]|or|and)*\)|\s*\[\s*\]")
_BRACKET_LEADING_PUNCT = re.compile(r"\((?:\s*[,;:])+\s*")
_LEFTOVER_MARKUP = re.compile(r"'{2,}|^[*#:;]+\s*", re.MULTILINE)


def wikitext_to_text(wikitext: str) -> str:
    """Plain text of an article's wikitext; paragraphs separated by newlines."""
    code = mwparserfromhell.parse(_strip_raw(wikitext), skip_style_tags=False)
    return _clean(_render(code.nodes, top_level=True))


def _strip_raw(wikitext: str) -> str:
    """Remove comments, refs and tables before parsing: where the parser gives up on a malformed
    construct it returns the rest as plain text, so these must not depend on it."""
    text = _COMMENT.sub("", wikitext)
    text = _REF.sub("", text)
    lines, depth = [], 0
    for line in text.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith("{|"):
            depth += 1
        elif depth and stripped.startswith("|}"):
            depth -= 1
            continue
        if not depth:
            lines.append(line)
    return "\n".join(lines)


def _render(nodes: list[Node], top_level: bool = False) -> str:
    parts: list[str] = []
    skip_level = 0  # inside a boilerplate section: skip until a heading of the same or higher level
    for node in nodes:
        if isinstance(node, Heading):
            if skip_level and node.level > skip_level:
                continue
            title = node.title.strip_code().strip().lower()
            skip_level = node.level if top_level and title in BOILERPLATE_SECTIONS else 0
            parts.append("\n")
            continue
        if skip_level:
            continue
        parts.append(_render_node(node))
    return "".join(parts)


def _render_node(node: Node) -> str:
    if isinstance(node, Text):
        return str(node.value)
    if isinstance(node, HTMLEntity):
        return str(node.normalize())
    if isinstance(node, Wikilink):
        return _render_link(node)
    if isinstance(node, ExternalLink):
        return _render(node.title.nodes) if node.title is not None else ""
    if isinstance(node, Tag):
        tag = str(node.tag).strip().lower()
        if tag in DROPPED_TAGS:
            return ""
        if tag in LINE_BREAK_TAGS:
            return "\n" + (_render(node.contents.nodes) if node.contents is not None else "")
        return _render(node.contents.nodes) if node.contents is not None else ""
    if isinstance(node, Comment):
        return ""
    if isinstance(node, Template):
        return _render_template(node)
    return ""  # Argument and anything unknown: not prose


MONTH_NAMES = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_WRAPPERS = frozenset(
    {"nowrap", "nobr", "small", "smaller", "big", "larger", "nowrap begin", "sic", "noitalic"}
)
_DASHES = {"ndash": "–", "mdash": "—", "snd": " – ", "snds": " – ", "spaced ndash": " – ", "mdashb": " — "}
_DATE_TEMPLATES = frozenset(
    {
        "birth date",
        "birth date and age",
        "death date",
        "death date and age",
        "start date",
        "start date and age",
        "end date",
        "film date",
        "dts",
        "date",
        "birth-date",
        "death-date",
        "bda",
        "dda",
    }
)
_UNITS = {
    "c": "°C",
    "f": "°F",
    "km2": "km²",
    "mi2": "sq mi",
    "sqmi": "sq mi",
    "m2": "m²",
    "m3": "m³",
    "ft2": "sq ft",
    "sqft": "sq ft",
    "e6acre": "million acres",
    "e6ha": "million ha",
    "tcuft": "trillion cubic feet",
    "e3km2": "thousand km²",
    "kph": "km/h",
    "mph": "mph",
}
_RANGE_WORDS = frozenset({"-", "–", "to", "and", "or", "x", "by", "+/-", "±", "to(-)", "and(-)", "&"})
_NUMBER = re.compile(r"^[-−+]?[\d,]*\.?\d+(?:e[-+]?\d+)?$", re.IGNORECASE)


def _render_template(template: Template) -> str:
    """The prose a value template stands for (see the module docstring); "" for any other template."""
    name = " ".join(str(template.name).strip().lower().replace("_", " ").split())
    args = [_render(p.value.nodes).strip() for p in template.params if not p.showkey]
    named = {
        str(p.name).strip().lower(): _render(p.value.nodes).strip() for p in template.params if p.showkey
    }
    if name in _WRAPPERS:
        return args[0] if args else ""
    if name in _DASHES:
        return _DASHES[name]
    if name in ("convert", "cvt"):
        return _render_convert(args)
    if name == "as of" and args:
        date = _format_date(args[:3], named)
        return f"{'as' if named.get('lc') in ('y', 'yes') else 'As'} of {date}" if date else ""
    if name == "val" and args:
        unit = named.get("u") or named.get("ul") or ""
        value = f"{args[0]}×10^{named['e']}" if named.get("e") else args[0]
        return f"{value} {unit}".strip()
    if name in ("frac", "sfrac") and args:
        return "/".join(args[-2:]) if len(args) < 3 else f"{args[0]} {args[1]}/{args[2]}"
    if name in ("circa", "c.") and args:
        return f"c. {args[0]}"
    if name in ("floruit", "fl.") and args:
        return f"fl. {args[0]}"
    if name in ("us$", "usd") and args:
        return f"US${args[0]}"
    if name == "lang" and len(args) >= 2:
        return args[1]
    if name.startswith("lang-") and args:
        return args[0]
    if name in _DATE_TEMPLATES and args:
        return _format_date(args[:3], named)
    return ""


def _render_convert(args: list[str]) -> str:
    """``{{convert|5|km|mi}}`` -> "5 km"; ``{{convert|5|-|10|km}}`` -> "5–10 km"."""
    if not args or not _NUMBER.match(args[0].replace(" ", "")):
        return ""
    value, rest = args[0], args[1:]
    while len(rest) >= 2 and rest[0].lower() in _RANGE_WORDS and _NUMBER.match(rest[1]):
        joiner = "–" if rest[0] in ("-", "–") else f" {rest[0].replace('(-)', '')} "
        value, rest = f"{value}{joiner}{rest[1]}", rest[2:]
    unit = _UNITS.get(rest[0].lower(), rest[0]) if rest else ""
    return f"{value} {unit}".strip()


def _format_date(parts: list[str], named: dict[str, str]) -> str:
    """``[year, month, day]`` -> "May 17, 1950" ("17 May 1950" with ``df=y``); a lone year stays; a
    date given as text ("1 May 2010") is kept as written."""
    if not parts or not parts[0].isdigit():
        return parts[0] if parts else ""
    year, month, day = parts[0], "", ""
    if len(parts) > 1:
        month = _month_name(parts[1])
    if month and len(parts) > 2 and parts[2].isdigit() and 1 <= int(parts[2]) <= 31:
        day = str(int(parts[2]))
    if not month:
        return year
    if not day:
        return f"{month} {year}"
    return (
        f"{day} {month} {year}" if named.get("df", "").lower() in ("y", "yes") else f"{month} {day}, {year}"
    )


def _month_name(text: str) -> str:
    if text.isdigit():
        return MONTH_NAMES[int(text) - 1] if 1 <= int(text) <= 12 else ""
    return next((m for m in MONTH_NAMES if m.lower().startswith(text.lower()[:3]) and len(text) >= 3), "")


def _render_link(link: Wikilink) -> str:
    target = str(link.title).strip()
    namespace, sep, _ = target.lstrip(":").partition(":")
    if sep and (namespace.strip().lower() in DROPPED_LINK_NAMESPACES or _INTERWIKI.match(target)):
        return ""
    if link.text is not None:
        return _render(link.text.nodes)
    return target.lstrip(":").split("#", 1)[0] if not target.startswith("#") else target[1:]


def _clean(text: str) -> str:
    text = _MAGIC_WORD.sub("", text)
    previous = None
    while previous != text:  # markup the parser left as text (nested templates: innermost first)
        previous, text = text, _LEFTOVER_TEMPLATE.sub("", text)
    text = _LEFTOVER_LINK.sub(r"\1", text)
    text = html.unescape(_LEFTOVER_TAG.sub("", text))
    text = _LEFTOVER_MARKUP.sub("", text)
    lines = []
    for raw_line in text.split("\n"):
        line = _SPACES.sub(" ", raw_line)
        line = _EMPTY_BRACKETS.sub("", line)
        line = _BRACKET_LEADING_PUNCT.sub("(", line)
        line = _SPACE_BEFORE_PUNCT.sub(r"\1", line)
        line = _SPACE_AFTER_OPEN.sub(r"\1", line).strip()
        if line and line[0] not in "|!{}" and any(c.isalnum() for c in line):
            lines.append(line)
    return "\n".join(lines)
