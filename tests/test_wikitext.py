import bz2
import re
from pathlib import Path

import pytest

from ramp.data.sources import Article, read_xml
from ramp.data.wikitext import wikitext_to_text

XML = Path(__file__).resolve().parent.parent / "data" / "enwiki-sample-106-articles.xml.bz2"


def test_keeps_prose_and_link_text_drops_markup():
    wikitext = (
        "{{Infobox person|name=Ada}}'''Ada Lovelace''' (10 December 1815{{snd}}1852)"
        "<ref>{{cite book|t=x}}</ref> "
        "was an [[England|English]] [[mathematician]].<!-- hidden --> She met [[Charles Babbage]]&nbsp;often."
        "<ref name=a/>\n[[File:Ada.jpg|thumb|A [[portrait]] of Ada]]\n"
        "== Life ==\nShe worked on the [[Analytical Engine#Design|engine]].\n"
        '{| class="wikitable"\n|-\n| cell || Babbage\n|}\n'
        "== References ==\n{{reflist}}\n* Some book, 1990.\n[[Category:Mathematicians]]\n[[de:Ada Lovelace]]"
    )
    text = wikitext_to_text(wikitext)
    assert text.startswith("Ada Lovelace (10 December 1815")
    assert "was an English mathematician." in text
    assert "Charles Babbage\u00a0often" in text or "Charles Babbage often" in text
    assert "She worked on the engine." in text
    for leftover in ("{{", "}}", "[[", "]]", "<ref", "'''", "cite book", "portrait", "Life", "cell"):
        assert leftover not in text, leftover
    assert "Some book" not in text  # the References section is boilerplate
    assert "Mathematicians" not in text and "de:" not in text


@pytest.fixture(scope="module")
def articles() -> list[Article]:
    with open(XML, "rb") as raw:
        return [r for r in read_xml(raw, str(XML)) if isinstance(r, Article)]


def test_real_articles_have_no_markup_left(articles):
    assert len(articles) == 106
    for article in articles:
        text = wikitext_to_text(article.text)
        assert len(text.split()) > 50, article.title
        for leftover in ("{{", "}}", "[[", "]]", "<ref", "</ref", "{|", "|}", "&nbsp;", "'''"):
            assert leftover not in text, (article.title, leftover)
        assert not re.search(r"^\s*[|!*#]", text, re.MULTILINE), article.title


def test_real_article_keeps_its_opening_sentence(articles):
    anarchism = next(a for a in articles if a.title == "Anarchism")
    assert wikitext_to_text(anarchism.text).startswith("Anarchism is a political philosophy")
    assert bz2  # the bundled file is real bz2 data


def test_value_templates_keep_their_numbers_and_dates():
    wikitext = (
        "It rises {{convert|1300|m|ft|sp=us}} over {{convert|5|-|10|km|mi}} at {{convert|-6|C|0}}. "
        "{{As of|2010|5}}, it had {{val|1.23|e=5|u=m}} and {{frac|1|2}} of it. "
        "Ada was born {{birth date and age|1950|5|17|df=y}} and died {{death date|1990|May|3}}; "
        "she wrote {{lang|fr|le chat}} {{nowrap|in 3 km}}{{snd}}done, {{circa|1850}}. "
        "It cost {{Inflation|US|5|1929}} dollars."
    )
    text = wikitext_to_text(wikitext)
    assert text.startswith(
        "It rises 1300 m over 5–10 km at -6 °C. As of May 2010, it had 1.23×10^5 m and 1/2"
    )
    assert "born 17 May 1950 and died May 3, 1990;" in text
    assert "she wrote le chat in 3 km – done, c. 1850." in text
    assert "It cost dollars." in text  # a template without a value of its own is still dropped
    for leftover in ("{{", "}}", "convert", "Inflation"):
        assert leftover not in text, leftover
