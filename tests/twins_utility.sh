#!/usr/bin/env bash
# Variant Twin utility on UCI Adult (k = 10, 20 segments): the first export keeps >= 80 % of the
# true segment memberships, suppresses <= 1 % and reaches k (bench/twins_adult --check; the
# figures it prints are recorded in docs/benchmarks.md). Called by scripts/test.
MSEG_SKIP_BUILD=1 exec "$(dirname "$0")/../bench/twins_adult" --runs 1 --check
