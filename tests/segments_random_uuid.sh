#!/usr/bin/env bash
# tests/segments_random.sh with uuid subject keys (the subject table and the source keyed by uuid,
# mapped to subject ids in mseg.subject_ids): the same randomized differential test.
exec bash "$(dirname "$0")/segments_random.sh" --key uuid
