"""Dead-letter records: every input that did not become an output, with its reason.

Every stage keeps ``count in = count out + count rejected``; rejected records are written as JSONL
(``rejected-*.jsonl``) with this layout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

MAX_PAYLOAD_CHARS = 2000


@dataclass(frozen=True)
class Rejection:
    record_id: str  # the best id known for the record ("<file>:<line>" when nothing better)
    stage: str  # read | split | spans | mask | answerability | cot ...
    reason: str  # a short machine-readable reason: unparseable, not_utf8, too_short, no_eligible_span ...
    detail: str = ""  # human-readable explanation
    payload: str = ""  # the start of the offending input, for debugging

    def to_json(self) -> str:
        row = asdict(self)
        row["payload"] = row["payload"][:MAX_PAYLOAD_CHARS]
        return json.dumps(row, ensure_ascii=False, sort_keys=True)
