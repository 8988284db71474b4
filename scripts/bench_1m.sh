#!/usr/bin/env bash
# Issue 29's measurements at a million real passages, as one resumable chain (hours on 2 cores: the
# encode about 2.6 to 3 h alone, the 1M Lucene index about 35 min with one thread (built here with two), then the
# reordering, the block-max files and the benchmarks). Everything goes under DATA, outside the work
# tree; run it again after a stop and each step goes on from what DATA already holds.
#
#   bash scripts/env.sh bash scripts/bench_1m.sh DATA [--peers pisa,bmp]
#
# 1. wiki-passages-1m encoded with the default model into DATA/wiki-1m/collection (`encode` resumes
#    from its finished parts of 20,000 passages);
# 2. growth: scripts/bench_growth_real.py at 100k, 300k and 1M (the first parts; its first 100,000
#    passages are wiki-passages-100k), JSON in DATA/growth_real.json;
# 3. the peers: scripts/bench_search.py on the 100k and 1M indexes of step 2 (linked as its wiki-100k
#    and wiki-1m), JSON in DATA/bench_search_1m.json.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bench_1m.sh DATA [bench_search.py options]" >&2; exit 2; }
data="$(mkdir -p "$1" && cd "$1" && pwd)"
shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
corpus="${SPLADE_LUCENE_DATA:-$root/../shared/datasets}/wiki-passages-1m/corpus.jsonl.xz"
[ -f "$corpus" ] || { echo "bench_1m.sh: $corpus not found" >&2; exit 1; }
# the peers (PISA, BMP, Seismic) are the bench extra's: refused now rather than after hours of work
if [[ " $* " != *" none "* && " $* " != *"--peers=none"* ]] && ! python -c "import bmp, pyterrier_pisa, seismic" 2>/dev/null; then
  echo "bench_1m.sh: the peers are missing: pip install -e '.[bench]' (or pass --peers none)" >&2
  exit 1
fi

if [ ! -f "$data/wiki-1m/collection/collection.meta" ]; then
  mkdir -p "$data/wiki-1m"
  splade-lucene encode --corpus "$corpus" --output "$data/wiki-1m/collection" --part-size 20000
fi

python "$root/scripts/bench_growth_real.py" --collection "$data/wiki-1m/collection" \
  --sizes 100000,300000,1000000 --root "$data/growth" --json "$data/growth_real.json" --index-threads 2

mkdir -p "$data/bench"
ln -sfn "$data/growth/prefix-100000" "$data/bench/wiki-100k"
ln -sfn "$data/growth/prefix-1000000" "$data/bench/wiki-1m"
python "$root/scripts/bench_search.py" --indexes wiki-100k,wiki-1m --root "$data/bench" \
  --json "$data/bench_search_1m.json" "$@"
