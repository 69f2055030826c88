"""A generated encyclopedia of fictional entities: the small world of the RAMP-effect experiment.

Countries, cities, people and companies with made-up names and relations (capitals, births, founders,
headquarters), one passage per entity, so no prior knowledge helps a policy: only search does. Every
salient value in a passage is tagged as a span (start, end, label, type) so the real masking pipeline
can mask it without NER. Relations are written into two passages where a two-hop question or a chained
mask needs them (a company's founder appears in the company's passage and in its headquarters city's,
never in the founder's own), so:

- a *chained* mask (``Its founder was born in [mask]``) can only be found by searching with the value
  of an earlier mask (the founder's name);
- *bridge* questions ("In which city was the founder of K born?") and *comparison* questions ("Which
  company was founded earlier, K1 or K2?") need two searches.

Skill, not shortcuts: every sentence kind has several phrasings (:data:`PHRASINGS`, drawn per article),
so the name a query must copy stands at varied places (the title opens a passage in one phrasing of
three), and questions are phrased several ways too. A share of the cities, people and companies is
**held out** (:attr:`World.held_out`): no RAMP training search ever names them, so copying them measures
a skill rather than memorised name-to-query pairs.

Everything is drawn from ``random.Random(stable_seed(seed, ...))``: the same seed gives the same world,
byte for byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ramp.retrieval.base import Retriever
from ramp.seeding import record_rng

EntityKind = Literal["country", "city", "person", "company"]
QuestionType = Literal["bridge", "comparison"]
SpanType = Literal["entity", "date", "number"]

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "io", "ou")
_CODAS = ("", "n", "r", "s", "l", "th", "x", "nd", "rk")
PROFESSIONS = ("painter", "engineer", "chemist", "merchant", "architect", "poet", "surveyor", "physician")
FOUNDING_YEARS = (1000, 2020)  # company founding years are distinct: comparisons have one answer
INDUSTRIES = ("shipbuilding", "textiles", "glassware", "printing", "brewing", "mining", "ceramics", "timber")
HELD_OUT_KINDS: tuple[EntityKind, ...] = ("city", "person", "company")  # the kinds a RAMP query names

# Phrasings of every sentence kind. ``{name}`` is a plain value, ``{name:LABEL}`` a tagged (maskable) one.
PHRASINGS: dict[str, tuple[str, ...]] = {
    "country": (
        "{country} is a country. Its capital is {capital:GPE}. "
        "The country adopted its constitution in {year:DATE}.",
        "The capital of the country {country} is {capital:GPE}, and its constitution dates from {year:DATE}.",
        "In {year:DATE} the country {country} adopted its constitution. Its capital is {capital:GPE}.",
    ),
    "city_country": (
        "{city} is a municipality of the country {country:GPE}.",
        "The municipality of {city} lies in the country {country:GPE}.",
        "In the country {country:GPE}, {city} is a municipality.",
    ),
    "city_population": (
        "It has a population of {population:CARDINAL}.",
        "About {population:CARDINAL} people live there.",
        "Its population is {population:CARDINAL}.",
    ),
    "city_company": (
        "The {industry} company {company}, founded by {founder:PERSON}, is based here.",
        "{founder:PERSON} founded the {industry} company {company}, which is based here.",
        "The {industry} company {company} has its seat here; it was founded by {founder:PERSON}.",
    ),
    "person": (
        "{person} was {job}, born in {year:DATE} in the city of {city:GPE}.",
        "Born in the city of {city:GPE} in {year:DATE}, {person} worked as {job}.",
        "The {job_word} {person} was born in {year:DATE}; the city of {city:GPE} was the birthplace.",
    ),
    "company_founded": (
        "{company} is a {industry} company founded in {year:DATE} by {founder:PERSON}.",
        "In {year:DATE}, {founder:PERSON} founded {company}, a {industry} company.",
        "The {industry} company {company} was founded by {founder:PERSON} in {year:DATE}.",
    ),
    "company_founder_born": (
        "Its founder was born in {city:GPE}.",
        "The founder was a native of {city:GPE}.",
        "{city:GPE} was the birthplace of its founder.",
    ),
    "company_headquarters": (
        "Its headquarters are in {city:GPE}.",
        "The company has its headquarters in {city:GPE}.",
        "{city:GPE} is the home of its headquarters.",
    ),
    "q_bridge_born": (
        "In which city was the founder of the company {company} born?",
        "Where was the person who founded the company {company} born?",
        "The company {company} had a founder; in which city was that founder born?",
    ),
    "q_bridge_country": (
        "In which country are the headquarters of the company {company}?",
        "The company {company} has its headquarters in which country?",
        "Which country hosts the headquarters of the company {company}?",
    ),
    "q_comparison": (
        "Which company was founded earlier, {first} or {second}?",
        "Of the companies {first} and {second}, which was founded first?",
        "Was {first} or {second} the company founded earlier?",
    ),
}
_SLOT = re.compile(r"\{(\w+)(?::(\w+))?\}")
_LABEL_TYPES: dict[str, SpanType] = {"DATE": "date", "CARDINAL": "number"}  # any other label: entity


@dataclass(frozen=True)
class WorldSpan:
    """A tagged salient value: character offsets into the passage text, NER-style label and mask type."""

    start: int
    end: int
    label: str
    type: SpanType


@dataclass(frozen=True)
class WorldArticle:
    """One entity's passage, in the pipeline's ``jsonl`` source layout plus its tagged spans."""

    id: str
    title: str
    text: str
    kind: EntityKind
    spans: tuple[WorldSpan, ...] = ()


@dataclass(frozen=True)
class Question:
    """A two-hop question with the two searches that answer it and the passages they must reach (the
    first supporting passage is the first hop's entity's own article)."""

    id: str
    question: str
    golden_answers: tuple[str, ...]
    type: QuestionType
    hop_queries: tuple[str, ...]
    supporting_ids: tuple[str, ...]
    entities: tuple[str, ...]  # the names the question mentions, in order


@dataclass(frozen=True)
class Chain:
    """A chained fact in one passage: ``value`` is found only by a search that includes ``key``."""

    article_id: str
    key: str  # the earlier value (the founder's name)
    value: str  # the chained value (the founder's birth city)
    query_without_key: str
    query_with_key: str
    source_id: str  # the passage that holds the chained value


@dataclass(frozen=True)
class Lookup:
    """Where a tagged value of one passage is stated again: a search for ``query`` (which names the entity
    ``subject`` and never contains the value) reaches ``source_id``, whose text holds it. The world oracle's
    search for that mask."""

    article_id: str
    value: str
    query: str
    source_id: str
    subject: str  # the id of the entity the query names


@dataclass(frozen=True)
class _Person:
    name: str
    born: int
    city: int
    job: str


@dataclass(frozen=True)
class _Firm:
    name: str
    founder: int
    year: int
    hq: int
    industry: str


@dataclass
class World:
    seed: int
    articles: list[WorldArticle] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)
    chains: list[Chain] = field(default_factory=list)
    lookups: list[Lookup] = field(default_factory=list)
    held_out: frozenset[str] = frozenset()  # entity ids no RAMP training search may name

    def write(self, out_dir: Path) -> dict[str, Path]:
        """``articles.jsonl`` (pipeline input, spans included), questions, chains, lookups, held-out ids."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {
            "articles": out_dir / "articles.jsonl",
            "questions": out_dir / "questions.jsonl",
            "chains": out_dir / "chains.jsonl",
            "lookups": out_dir / "lookups.jsonl",
            "held_out": out_dir / "held-out.json",
        }
        write_jsonl(paths["articles"], (asdict(a) for a in self.articles))
        write_jsonl(paths["questions"], (asdict(q) for q in self.questions))
        write_jsonl(paths["chains"], (asdict(c) for c in self.chains))
        write_jsonl(paths["lookups"], (asdict(x) for x in self.lookups))
        paths["held_out"].write_text(json.dumps(sorted(self.held_out)) + "\n", encoding="utf-8")
        return paths


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file written by :func:`write_jsonl`."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: Iterable[Mapping[str, object]]) -> None:
    """One sorted-key JSON object per line (byte-identical for identical rows)."""
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


class _Names:
    """Unique, pronounceable made-up names (capitalised), never repeating a word across the world."""

    def __init__(self, seed: int) -> None:
        self.rng = record_rng(seed, "names")
        self.used: set[str] = set()

    def word(self, syllables: int) -> str:
        while True:
            name = "".join(
                self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                for _ in range(syllables)
            ).capitalize()
            if name.lower() not in self.used and len(name) >= 4:
                self.used.add(name.lower())
                return name

    def person(self) -> str:
        return f"{self.word(2)} {self.word(2)}"


class _Writer:
    """Builds a passage sentence by sentence from phrasings, recording the offsets of tagged values."""

    def __init__(self, seed: int, article_id: str) -> None:
        self.rng = record_rng(seed, article_id, "phrasing")
        self.text = ""
        self.spans: list[WorldSpan] = []

    def say(self, kind: str, **values: str) -> None:
        """Append one sentence of ``kind`` in a phrasing drawn for this article."""
        template = self.rng.choice(PHRASINGS[kind])
        if self.text:
            self.text += " "
        position = 0
        for slot in _SLOT.finditer(template):
            self.text += template[position : slot.start()]
            name, label = slot.group(1), slot.group(2)
            value = values[name]
            if label:
                start = len(self.text)
                self.spans.append(
                    WorldSpan(start, start + len(value), label, _LABEL_TYPES.get(label, "entity"))
                )
            self.text += value
            position = slot.end()
        self.text += template[position:]
        if self.text[:1].islower():
            self.text = self.text[0].upper() + self.text[1:]

    def article(self, article_id: str, title: str, kind: EntityKind) -> WorldArticle:
        return WorldArticle(article_id, title, self.text, kind, tuple(self.spans))


def phrase(kind: str, number: int, **values: str) -> str:
    """Phrasing ``number`` of sentence ``kind`` with plain values (questions, tests)."""
    return _SLOT.sub(lambda m: values[m.group(1)], PHRASINGS[kind][number])


def generate_world(
    seed: int = 0,
    countries: int = 6,
    cities_per_country: int = 4,
    people: int = 60,
    companies: int = 30,
    held_out: float = 0.3,
) -> World:
    """A deterministic world; sizes are counts of entities of each kind, ``held_out`` the share of the
    cities, people and companies that no RAMP training search may name."""
    if min(countries, cities_per_country, people, companies) < 2:
        raise ValueError("every entity kind needs at least 2 members (comparisons pair them)")
    if companies > FOUNDING_YEARS[1] - FOUNDING_YEARS[0] + 1 or countries > 200:
        raise ValueError(f"at most {FOUNDING_YEARS[1] - FOUNDING_YEARS[0] + 1} companies and 200 countries")
    if not 0 <= held_out < 1:
        raise ValueError(f"held_out is a share in [0, 1), got {held_out}")
    rng = record_rng(seed, "world")
    names = _Names(seed)
    country_names = [names.word(2) for _ in range(countries)]
    cities = [(names.word(2), c) for c in range(countries) for _ in range(cities_per_country)]
    capital = {c: next(i for i, (_, cc) in enumerate(cities) if cc == c) for c in range(countries)}
    years_used: set[int] = set()

    def year(lo: int, hi: int) -> int:  # distinct years, so every comparison has one answer
        while True:
            y = rng.randint(lo, hi)
            if y not in years_used:
                years_used.add(y)
                return y

    persons = [
        _Person(names.person(), rng.randint(1700, 1899), rng.randrange(len(cities)), rng.choice(PROFESSIONS))
        for _ in range(people)
    ]
    firms: list[_Firm] = []
    for _ in range(companies):
        founder_index = rng.randrange(people)
        hq = rng.randrange(len(cities) - 1)  # never the founder's birth city: bridges stay two-hop
        hq += hq >= persons[founder_index].city
        firms.append(_Firm(names.word(3), founder_index, year(*FOUNDING_YEARS), hq, rng.choice(INDUSTRIES)))
    world = World(seed=seed)
    for c, name in enumerate(country_names):
        w = _Writer(seed, f"country-{c}")
        w.say("country", country=name, capital=cities[capital[c]][0], year=str(year(800, 999)))
        world.articles.append(w.article(f"country-{c}", name, "country"))
    for i, (name, c) in enumerate(cities):
        w = _Writer(seed, f"city-{i}")
        w.say("city_country", city=name, country=country_names[c])
        w.say("city_population", population=f"{rng.randint(2, 900) * 1000 + rng.randint(1, 999):,}")
        for f in (f for f in firms if f.hq == i):
            w.say("city_company", industry=f.industry, company=f.name, founder=persons[f.founder].name)
        world.articles.append(w.article(f"city-{i}", name, "city"))
    for p, person in enumerate(persons):
        w = _Writer(seed, f"person-{p}")
        w.say(
            "person",
            person=person.name,
            job=f"{_article(person.job)} {person.job}",
            job_word=person.job,
            year=str(person.born),
            city=cities[person.city][0],
        )
        world.articles.append(w.article(f"person-{p}", person.name, "person"))
    for k, firm in enumerate(firms):
        founder = persons[firm.founder]
        w = _Writer(seed, f"company-{k}")
        w.say(
            "company_founded",
            company=firm.name,
            industry=firm.industry,
            year=str(firm.year),
            founder=founder.name,
        )
        if _chained(k):
            w.say("company_founder_born", city=cities[founder.city][0])
        w.say("company_headquarters", city=cities[firm.hq][0])
        world.articles.append(w.article(f"company-{k}", firm.name, "company"))
        if _chained(k):
            world.chains.append(
                Chain(
                    article_id=f"company-{k}",
                    key=founder.name,
                    value=cities[founder.city][0],
                    query_without_key=f"{firm.name} founder was born in",
                    query_with_key=birth_city_query(founder.name),
                    source_id=f"person-{firm.founder}",
                )
            )
    world.lookups = _lookups(persons, firms, cities, country_names, capital)
    world.questions = _questions(seed, persons, firms, cities, country_names)
    sizes = {"city": len(cities), "person": people, "company": companies}
    held = record_rng(seed, "held-out")
    world.held_out = frozenset(
        f"{kind}-{i}"
        for kind in HELD_OUT_KINDS
        for i in held.sample(range(sizes[kind]), round(held_out * sizes[kind]))
    )
    return world


def _lookups(
    persons: list[_Person],
    firms: list[_Firm],
    cities: list[tuple[str, int]],
    country_names: list[str],
    capital: dict[int, int],
) -> list[Lookup]:
    """Every tagged value that another passage states, with the query that reaches that passage (the
    relation's one query, as the questions' hops write it) and the entity it names."""
    out = [
        Lookup(f"city-{i}", country_names[c], country_query(cities[i][0]), f"country-{c}", f"city-{i}")
        for c, i in capital.items()
    ]
    chained_by_founder: dict[int, int] = {}
    for k, firm in enumerate(firms):
        founder = persons[firm.founder]
        company, hq = f"company-{k}", f"city-{firm.hq}"
        out.append(Lookup(company, founder.name, founder_query(firm.name), hq, company))
        out.append(Lookup(company, cities[firm.hq][0], headquarters_query(firm.name), hq, company))
        out.append(Lookup(hq, founder.name, founder_query(firm.name), company, company))
        if _chained(k):
            birth = cities[founder.city][0]
            person = f"person-{firm.founder}"
            out.append(Lookup(company, birth, birth_city_query(founder.name), person, person))
            chained_by_founder.setdefault(firm.founder, k)
    for p, k in sorted(chained_by_founder.items()):
        birth, name = cities[persons[p].city][0], persons[p].name
        out.append(Lookup(f"person-{p}", birth, birth_city_query(name), f"company-{k}", f"person-{p}"))
    return out


def fact_questions(world: World) -> list[dict[str, Any]]:
    """One-search fact questions as QA rows, answers read from the passages' tagged spans: the country of
    each municipality and the founder of each company (the seeds that ``ramp data synthesize`` makes
    harder)."""
    rows: list[dict[str, Any]] = []
    for article in world.articles:
        values = {s.label: article.text[s.start : s.end] for s in reversed(article.spans)}  # first per label
        if article.kind == "city":
            question, answer = f"In which country is the municipality {article.title}?", values["GPE"]
        elif article.kind == "company":
            question, answer = f"Who founded the company {article.title}?", values["PERSON"]
        else:
            continue
        rows.append({"id": f"fact-{article.id}", "question": question, "golden_answers": [answer]})
    return rows


def split_questions(
    world: World, train: int, test: int, seed: int = 0
) -> tuple[list[Question], list[Question]]:
    """A seeded split of the questions: ``train`` for fine-tuning, ``test`` held out (disjoint)."""
    if train + test > len(world.questions):
        raise ValueError(f"{train} + {test} questions asked, the world has {len(world.questions)}")
    order = sorted(world.questions, key=lambda q: record_rng(seed, q.id, "split").random())
    return order[:train], order[train : train + test]


# One query per relation, written the same by the RAMP oracle's lookups and the questions' hops: what
# pretraining teaches to search is what the questions need.
def founder_query(company: str) -> str:
    return f"{company} company founded by"


def headquarters_query(company: str) -> str:
    return f"{company} headquarters"


def birth_city_query(person: str) -> str:
    return f"{person} born city"


def country_query(city: str) -> str:
    return f"{city} municipality country"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _chained(company_index: int) -> bool:
    """Even companies carry a chained fact (for pretraining); odd ones a held-out bridge question."""
    return company_index % 2 == 0


def _questions(
    seed: int,
    persons: list[_Person],
    firms: list[_Firm],
    cities: list[tuple[str, int]],
    country_names: list[str],
) -> list[Question]:
    rng = record_rng(seed, "questions")
    out: list[Question] = []
    for k, firm in enumerate(firms):
        founder = persons[firm.founder]
        if _chained(k):  # its passage states the founder's birthplace: not a two-hop question
            continue
        out.append(
            Question(
                id=f"q-bridge-born-{k}",
                question=phrase("q_bridge_born", rng.randrange(3), company=firm.name),
                golden_answers=(cities[founder.city][0],),
                type="bridge",
                hop_queries=(founder_query(firm.name), birth_city_query(founder.name)),
                supporting_ids=(f"company-{k}", f"person-{firm.founder}"),
                entities=(firm.name,),
            )
        )
    for k, firm in enumerate(firms):
        hq_city, hq_country = cities[firm.hq]
        out.append(
            Question(
                id=f"q-bridge-country-{k}",
                question=phrase("q_bridge_country", rng.randrange(3), company=firm.name),
                golden_answers=(country_names[hq_country],),
                type="bridge",
                hop_queries=(headquarters_query(firm.name), country_query(hq_city)),
                supporting_ids=(f"company-{k}", f"city-{firm.hq}"),
                entities=(firm.name,),
            )
        )
    for n in range(len(firms)):
        a, b = rng.sample(range(len(firms)), 2)
        fa, fb = firms[a], firms[b]
        out.append(
            Question(
                id=f"q-compare-founded-{n}",
                question=phrase("q_comparison", rng.randrange(3), first=fa.name, second=fb.name),
                golden_answers=(fa.name if fa.year < fb.year else fb.name,),
                type="comparison",
                hop_queries=(founder_query(fa.name), founder_query(fb.name)),
                supporting_ids=(f"company-{a}", f"company-{b}"),
                entities=(fa.name, fb.name),
            )
        )
    return out


def dpr_rows(world: World) -> list[dict[str, str]]:
    """The world's passages in the DPR wiki-18 layout, with the pipeline's passage ids (``<id>#0``)."""
    return [{"id": f"{a.id}#0", "contents": f'"{a.title}"\n{a.text}'} for a in world.articles]


def unverified_questions(world: World, retriever: Retriever, k: int = 3) -> list[tuple[str, str]]:
    """``(question id, reason)`` for every question its two searches do not answer.

    Each hop's query must rank its supporting passage in the top ``k``; a bridge answer must stand in the
    second passage and not in the first (else one search would do).
    """
    text = {f"{a.id}#0": a.text for a in world.articles}
    failures: list[tuple[str, str]] = []
    hits = retriever.search([q for question in world.questions for q in question.hop_queries], k=k)
    for n, question in enumerate(world.questions):
        for hop, (doc, found) in enumerate(
            zip(question.supporting_ids, hits[2 * n : 2 * n + 2], strict=True)
        ):
            if f"{doc}#0" not in {h.doc_id for h in found}:
                failures.append((question.id, f"hop {hop + 1} misses {doc}"))
                break
        else:
            first, second = (text[f"{d}#0"] for d in question.supporting_ids)
            answer = question.golden_answers[0]
            if question.type == "bridge" and (answer not in second or answer in first):
                failures.append((question.id, "the answer is not a second-hop fact"))
    return failures


def unverified_chains(world: World, retriever: Retriever, k: int = 3) -> list[tuple[str, str]]:
    """``(article id, reason)`` for every chain that is findable without its key, or not with it."""
    failures: list[tuple[str, str]] = []
    queries = [q for c in world.chains for q in (c.query_without_key, c.query_with_key)]
    excludes = [[f"{c.article_id}#0"] for c in world.chains for _ in range(2)]
    hits = retriever.search(queries, k=k, exclude_doc_ids=excludes)
    for n, chain in enumerate(world.chains):
        without, with_key = ({h.doc_id for h in found} for found in hits[2 * n : 2 * n + 2])
        if f"{chain.source_id}#0" in without:
            failures.append((chain.article_id, "found without the earlier value"))
        elif f"{chain.source_id}#0" not in with_key:
            failures.append((chain.article_id, "not found with the earlier value"))
    return failures
