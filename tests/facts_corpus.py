"""A hand-made corpus of made-up facts (companies, founders, towns), shared by the synthesis and simulated
search tests: small enough to read, with sentences written the way encyclopedias open an article."""

from __future__ import annotations

import json
from pathlib import Path

PASSAGES = (
    (
        "velmora",
        "Velmora Works",
        "Velmora Works is a glassware company founded in 1803 by Tarin Oslo. "
        "Its headquarters are in Brenholt.",
    ),
    (
        "tarin",
        "Tarin Oslo",
        "Tarin Oslo was a chemist born in 1761 in the port town of Quessa. He studied salts and glazes.",
    ),
    ("quessa", "Quessa", "Quessa is a port town on the river Lune. Its harbour was rebuilt after a flood."),
    (
        "brenholt",
        "Brenholt",
        "Brenholt is a municipality of the country Dravia. It has a population of 12,400.",
    ),
    ("dravia", "Dravia", "Dravia is a country whose capital is Ostrel. Its parliament meets in spring."),
    (
        "kelvane",
        "Kelvane Mills",
        "Kelvane Mills was founded by Irsa Doun in 1911. Its headquarters are in Ostrel.",
    ),
    ("irsa", "Irsa Doun", "Irsa Doun is a weaver from the hill village of Pellor. She trained in Quessa."),
    ("lune", "Lune", "Lune is a slow river that floods in autumn."),
    ("marrow", "Marrow Guild", "Marrow Guild is a union of boatwrights founded in 1620 in Pellor."),
    ("sarn", "Sarn Vey", "Sarn Vey was a surveyor who mapped the coast of Dravia in 1790."),
)

# Simple fact questions (one search answers each, or not: the rejections ``ramp data synthesize`` must give).
SEEDS = [
    {
        "id": "s1",
        "question": "In which town are the headquarters of Velmora Works?",
        "golden_answers": ["Brenholt"],
    },
    {
        "id": "s2",
        "question": "Where are the headquarters of the company Kelvane Mills?",
        "golden_answers": ["Ostrel"],
    },
    {"id": "s3", "question": "Who designed the harbour of Zarnoth?", "golden_answers": ["Nobody Known"]},
    {"id": "s4", "question": "Is Brenholt in Dravia?", "golden_answers": ["Dravia"]},
    {"id": "s5", "question": "Which country has Ostrel as its capital?", "golden_answers": ["Dravia"]},
    {"id": "s6", "question": "what is the capital of the country?", "golden_answers": ["Ostrel"]},
    {"id": "bad", "question": ""},
]
# Queries of the hand-made corpus with what they look for: the simulator learns them from real searches.
QUERIES = [
    ("q1", "Velmora Works headquarters", "Brenholt"),
    ("q2", "Tarin Oslo birth town", "Quessa"),
    ("q3", "Kelvane Mills founded by", "Irsa Doun"),
    ("q4", "Dravia capital city", "Ostrel"),
    ("q5", "Brenholt country", "Dravia"),
    ("q6", "Marrow Guild founding year", "1620"),
    ("q7", "Quessa river", "Lune"),
    ("q8", "Irsa Doun home village", "Pellor"),
]


def write_corpus(path: Path) -> Path:
    """The passages as a DPR wiki-18 JSONL corpus (``{"id", "contents": "\\"Title\\"\\ntext"}``)."""
    with path.open("w", encoding="utf-8") as handle:
        for doc_id, title, text in PASSAGES:
            handle.write(json.dumps({"id": doc_id, "contents": f'"{title}"\n{text}'}) + "\n")
    return path


def write_jsonl(path: Path, rows: list[dict[str, object]], extra_lines: tuple[str, ...] = ()) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
        handle.writelines(line + "\n" for line in extra_lines)
    return path
