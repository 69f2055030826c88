"""MediaWiki markup -> plain prose, with mwparserfromhell (MIT).

Dropped: templates, template arguments, comments, ``<ref>`` and other non-prose tags, tables, files and
images, categories, interwiki/interlanguage links, headings (text and markup) and the boilerplate sections
(References, External links, See also ...). Kept: text, link text (or the link target when it has none),
the contents of formatting tags (bold, italic, ``<span>`` ...), decoded HTML entities. Paragraphs and list
items stay on separate lines, so the sentence splitter sees them as boundaries.
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
    return ""  # Template, Argument and anything unknown: not prose


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
