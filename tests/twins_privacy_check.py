#!/usr/bin/env python3
"""Independent checker of a partner's sequence of Variant Twin dumps (tests/twins_privacy.sh).

It knows nothing of pg_mseg's code: it reads what a partner receives (the dumps, JSON lines) and
what an adversary may know (the public source table at the time of each dump), and measures:

  k_dump     per dump: twins grouped by every released field but the pseudonym (quasi values,
             segments, legal basis, expiry, policy); the smallest group in distinct twins
  k_held     the same over everything the partner holds after applying each dump
  order      every dump's twins and tombstones in pseudonym order; Spearman's rank correlation
             between the line order of the full dump and the subject keys behind it (the
             controller's pseudonym -> key table, given); the "line i is the i-th customer" attack
  history    every pseudonym's history over all dumps (when it appeared, every version it had, when
             it ended); the smallest group of pseudonyms with exactly the same history
  intersect  per pseudonym, the intersection of the quasi regions of all its versions (and the
             union of the segments it was ever said to be in); the smallest group of pseudonyms
             sharing it
  linkage    per pseudonym, the persons of the public table whose values, at every dump in which
             the partner held the pseudonym, lie inside the version it held then; the smallest
             such candidate set (re-identified = 1 candidate)
  tombstones carry nothing but the pseudonym

Usage: twins_privacy_check.py --k K --dumps DIR --snapshots DIR --keys FILE --columns SPEC
  DIR of dumps: <seq>.jsonl; DIR of snapshots: <seq>.csv (header: id + quasi columns), the
  public table as it was when dump <seq> was made; FILE: CSV pseudonym,subject_key of the full
  dump; SPEC: name=integer | name=flat | name=category:FILE (child,parent CSV), comma-separated.
Prints one JSON object with every figure and exits 1 when any check fails.
"""
import argparse
import csv
import json
import os
import sys
from collections import Counter, defaultdict


def parse_columns(spec):
    cols = {}
    for part in spec.split(","):
        name, kind = part.split("=", 1)
        if kind.startswith("category:"):
            parent = {}
            with open(kind.split(":", 1)[1]) as f:
                for child, par in csv.reader(f):
                    parent[child] = par
            cols[name] = ("category", parent)
        else:
            cols[name] = (kind, None)
    return cols


def leaves_under(parent, label):
    """The leaf values a category label stands for (a label that is a leaf: itself)."""
    children = defaultdict(list)
    for c, p in parent.items():
        children[p].append(c)
    out, stack = set(), [label]
    while stack:
        x = stack.pop()
        if x in children:
            stack.extend(children[x])
        else:
            out.add(x)
    return frozenset(out)


class Region:
    """What a generalised label says about a column's value, as a set test and an intersection."""

    def __init__(self, cols):
        self.cols = cols
        self.cache = {}

    def of(self, col, label):
        key = (col, label)
        if key in self.cache:
            return self.cache[key]
        kind, data = self.cols[col]
        if label == "*":
            r = ("all",)
        elif kind == "integer":
            # "37" or "35-39" (bounds may be negative: the first '-' after a digit splits)
            cut = next((i for i in range(1, len(label)) if label[i] == "-" and label[i - 1].isdigit()), None)
            lo, hi = (int(label), int(label)) if cut is None else (int(label[:cut]), int(label[cut + 1:]))
            r = ("range", lo, hi)
        elif kind == "category":
            r = ("set", leaves_under(data, label))
        else:
            r = ("set", frozenset([label]))
        self.cache[key] = r
        return r

    @staticmethod
    def meet(a, b):
        if a[0] == "all":
            return b
        if b[0] == "all":
            return a
        if a[0] == "range" and b[0] == "range":
            lo, hi = max(a[1], b[1]), min(a[2], b[2])
            return ("range", lo, hi) if lo <= hi else ("empty",)
        if a[0] == "set" and b[0] == "set":
            s = a[1] & b[1]
            return ("set", s) if s else ("empty",)
        return ("empty",)

    @staticmethod
    def contains(r, value):
        if r[0] == "all":
            return True
        if r[0] == "empty" or value is None or value == "":
            return False
        if r[0] == "range":
            try:
                v = int(value)
            except ValueError:
                return False
            return r[1] <= v <= r[2]
        return value in r[1]


def content(line):
    d = dict(line)
    d.pop("pseudonym", None)
    return json.dumps(d, sort_keys=True)


def spearman(xs, ys):
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2.0
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    n = len(xs)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / (vx * vy) ** 0.5 if vx and vy else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--dumps", required=True)
    ap.add_argument("--snapshots", required=True)
    ap.add_argument("--keys", required=True)
    ap.add_argument("--columns", required=True)
    ap.add_argument("--full", type=int, default=1, help="sequence number of the full dump for the order checks")
    a = ap.parse_args()
    k = a.k
    cols = parse_columns(a.columns)
    names = list(cols)
    regions = Region(cols)
    seqs = sorted(int(f[:-6]) for f in os.listdir(a.dumps) if f.endswith(".jsonl"))
    failures = []
    out = {"k": k, "dumps": len(seqs)}

    # ---- per dump: shape, order, k over every released field; replay the partner's state
    held = {}          # pseudonym -> content (json text) held now
    history = {}       # pseudonym -> [first seq, [(seq, content)...], end seq or None]
    held_at = {}       # seq -> {pseudonym: content}
    k_dump, k_held, per_dump = [], [], []
    manifests = {}
    for s in seqs:
        with open(os.path.join(a.dumps, f"{s}.jsonl")) as f:
            lines = [json.loads(l) for l in f if l.strip()]
        m, body = lines[0], lines[1:-1]
        manifests[s] = m
        twins = [l for l in body if l.get("type") == "twin"]
        tombs = [l for l in body if l.get("type") == "tombstone"]
        kinds = [l.get("type") for l in body]
        if kinds != ["twin"] * len(twins) + ["tombstone"] * len(tombs):
            failures.append(f"dump {s}: twins and tombstones are not in two runs")
        for name, group in (("twins", twins), ("tombstones", tombs)):
            ps = [l["pseudonym"] for l in group]
            if ps != sorted(ps):
                failures.append(f"dump {s}: {name} are not in pseudonym order")
        bad = [l for l in tombs if set(l) != {"pseudonym", "type"}]
        if bad:
            failures.append(f"dump {s}: {len(bad)} tombstones carry more than the pseudonym: {bad[0]}")
        c = Counter(content(l) for l in twins)
        kd = min(c.values()) if c else None
        if kd is not None:
            k_dump.append(kd)
            if kd < k:
                failures.append(f"dump {s}: a group of {kd} twins equal in every field but the pseudonym")
        if m["mode"] == "full":
            # a full dump replaces the partner's state; absent pseudonyms have ended
            now = {l["pseudonym"]: content(l) for l in twins}
            for p in list(held):
                if p not in now:
                    history[p][2] = s
                    del held[p]
        for l in twins:
            p, cnt = l["pseudonym"], content(l)
            if p not in history:
                history[p] = [s, [(s, cnt)], None]
            elif history[p][2] is not None:
                failures.append(f"dump {s}: pseudonym {p} comes back after its tombstone")
            elif held.get(p) != cnt:
                history[p][1].append((s, cnt))
            held[p] = cnt
        for l in tombs:
            p = l["pseudonym"]
            if p in held:
                del held[p]
                history[p][2] = s
        ch = Counter(held.values())
        kh = min(ch.values()) if ch else None
        if kh is not None:
            k_held.append(kh)
            if kh < k:
                failures.append(f"after dump {s}: the partner holds a group of {kh} equal twins")
        if m.get("k_reached") != (kh or 0):
            failures.append(f"dump {s}: the manifest says k_reached {m.get('k_reached')}, the checker finds {kh}")
        held_at[s] = dict(held)
        per_dump.append({"seq": s, "mode": m["mode"], "twins": len(twins), "tombstones": len(tombs), "k_dump": kd, "k_held": kh})
    out["k_dump_min"] = min(k_dump) if k_dump else None
    out["k_held_min"] = min(k_held) if k_held else None
    out["per_dump"] = per_dump

    # ---- the full dump's order against the subject keys behind it
    key_of = {}
    with open(a.keys) as f:
        for row in csv.reader(f):
            key_of[row[0]] = int(row[1])
    with open(os.path.join(a.dumps, f"{a.full}.jsonl")) as f:
        full_twins = [json.loads(l) for l in f if '"type":"twin"' in l]
    keys = [key_of.get(l["pseudonym"]) for l in full_twins]
    if any(x is None for x in keys):
        failures.append("the full dump holds a pseudonym the controller's table does not know")
        keys = [x or 0 for x in keys]
    rho = spearman(list(range(len(keys))), keys)
    out["order"] = {"twins": len(keys), "spearman_line_vs_key": round(rho, 5)}
    if abs(rho) > 0.02:
        failures.append(f"line order correlates with subject keys: rho = {rho:.4f}")
    # the published attack: line i of a full dump is the i-th eligible customer in key order
    by_rank = sorted(keys)
    out["order"]["line_i_is_ith_key"] = sum(1 for i, x in enumerate(keys) if by_rank[i] == x)

    # ---- histories, intersections of versions
    hist_groups = Counter()
    inter_groups = Counter()
    for p, (first, versions, end) in history.items():
        hist_groups[(first, tuple(versions), end)] += 1
        region = None
        segs = set()
        for _, cnt in versions:
            d = json.loads(cnt)
            r = tuple(regions.of(c, d["quasi"].get(c, "*")) for c in names)
            region = r if region is None else tuple(Region.meet(x, y) for x, y in zip(region, r))
            segs.update(d["segments"])
        inter_groups[(region, tuple(sorted(segs)))] += 1
    out["pseudonyms"] = len(history)
    out["history_min"] = min(hist_groups.values()) if hist_groups else None
    out["history_groups"] = len(hist_groups)
    out["intersection_min"] = min(inter_groups.values()) if inter_groups else None
    if out["history_min"] is not None and out["history_min"] < k:
        failures.append(f"{sum(1 for v in hist_groups.values() if v < k)} histories are shared by fewer than {k} pseudonyms")
    if out["intersection_min"] is not None and out["intersection_min"] < k:
        failures.append(f"an intersection of versions is shared by {out['intersection_min']} pseudonyms only")
    out["changed_pseudonyms"] = sum(1 for v in history.values() if len(v[1]) > 1)
    out["ended_pseudonyms"] = sum(1 for v in history.values() if v[2] is not None)

    # ---- linkage with the public table at the time of every dump
    index = {}  # person id -> bit
    snapshots = {}
    for s in seqs:
        with open(os.path.join(a.snapshots, f"{s}.csv")) as f:
            r = csv.reader(f)
            header = next(r)
            pos = [header.index(c) for c in names]
            rows = {}
            for row in r:
                pid = row[0]
                rows[pid] = [row[i] for i in pos]
                if pid not in index:
                    index[pid] = len(index)
            snapshots[s] = rows
    cand = {}  # pseudonym -> candidate bitmask so far
    for s in seqs:
        rows = snapshots[s]
        # per column, value -> persons having it now
        vmask = [defaultdict(int) for _ in names]
        for pid, vals in rows.items():
            bit = 1 << index[pid]
            for c, v in enumerate(vals):
                vmask[c][v] |= bit
        everyone = 0
        for pid in rows:
            everyone |= 1 << index[pid]
        col_cache = {}
        region_cache = {}

        def column_mask(c, label):
            key = (c, label)
            if key not in col_cache:
                r = regions.of(names[c], label)
                cm = 0
                for v, bits in vmask[c].items():
                    if Region.contains(r, v):
                        cm |= bits
                col_cache[key] = cm
            return col_cache[key]

        def mask_of(cnt):
            if cnt not in region_cache:
                d = json.loads(cnt)
                m = everyone
                for c, name in enumerate(names):
                    label = d["quasi"].get(name, "*")
                    if label != "*":
                        m &= column_mask(c, label)
                region_cache[cnt] = m
            return region_cache[cnt]

        for p, cnt in held_at[s].items():
            cand[p] = cand.get(p, -1) & mask_of(cnt)
    sizes = {p: m.bit_count() for p, m in cand.items()}
    out["linkage_min_candidates"] = min(sizes.values()) if sizes else None
    out["linkage_reidentified"] = sum(1 for v in sizes.values() if v == 1)
    out["linkage_below_k"] = sum(1 for v in sizes.values() if v < k)
    if out["linkage_below_k"]:
        failures.append(f"{out['linkage_below_k']} pseudonyms link to fewer than {k} persons of the public table")

    last = manifests[seqs[-1]]
    out["last_manifest"] = {x: last.get(x) for x in ("k_reached", "k_history", "counts", "ended_by_reason", "segment_memberships", "information_loss")}
    out["failures"] = failures
    print(json.dumps(out, indent=1, sort_keys=True))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
