"""The data pipeline's library: sources, wikitext, passages, spans, masking, samples, answerability, stats."""
