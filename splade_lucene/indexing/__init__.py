"""Indexes: the Anserini build and merge, Lucene access, impact tables, query tables,
reordering and the block-max files."""

# the block-max engine's orders and default block size (:mod:`.blockmax`), here so that the CLI
# names them without loading numba
BLOCKMAX_ORDERS = ("bp", "index", "keep")
BLOCKMAX_BLOCK = 4
