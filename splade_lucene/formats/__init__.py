"""Files and their records: corpora, queries, qrels, runs, collections, options and metadata."""
