"""Indexes: the Anserini build and merge, Lucene access, impact tables, query tables,
reordering and the block-max files."""
