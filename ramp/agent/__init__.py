"""The search agent: text protocol, parser, task record, generation backends and the one turn loop."""
