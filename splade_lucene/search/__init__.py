"""Search: query encoders, engines, the searcher over one index and over shards, explain, fusion, BM25."""
