"""Question answering for evaluation and fine-tuning: dataset loaders, the distractor corpus builder,
per-question scoring and the no-model ``builtin`` search-and-read policy.

Every dataset loads to one record, :class:`QARecord` ``{id, question, golden_answers, metadata}``.
"""

from ramp.qa.loaders import DATASETS, QADataError, QARecord, load_qa

__all__ = ["DATASETS", "QADataError", "QARecord", "load_qa"]
