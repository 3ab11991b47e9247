"""The anonypy baseline for bench/adult: anonypy's Mondrian on the same UCI Adult rows.

    python adult_anonypy.py ADULT_CSV [K]

Complete rows only (45,222), the 8 classic quasi-identifiers; age numeric, the other seven
categorical (pandas category dtype, which anonypy generalises to the set of values a
partition holds). NCP as bench/adult and the kanon crate compute it: numeric columns the
partition's max - min over the column's max - min, categorical columns (distinct values in
the partition - 1) / (distinct values in the column - 1); the mean over records and columns.
Prints one machine-readable line: RESULT algorithm=anonypy ...
"""
import sys
import time

import pandas as pd
from anonypy import mondrian

QUASI = ["age", "workclass", "education", "marital_status", "occupation", "race", "sex", "native_country"]


def main():
    path = sys.argv[1]
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    df = pd.read_csv(path, keep_default_na=False, dtype=str)
    data_cols = [c for c in df.columns if c != "id"]
    df = df[(df[data_cols] != "").all(axis=1)].reset_index(drop=True)
    df["age"] = df["age"].astype(int)
    for c in QUASI[1:]:
        df[c] = df[c].astype("category")
    started = time.time()
    parts = mondrian.Mondrian(df, QUASI, "income").partition(k)
    elapsed = time.time() - started
    n = len(df)
    width = {c: (df[c].max() - df[c].min()) if c == "age" else df[c].nunique() - 1 for c in QUASI}
    loss = {c: 0.0 for c in QUASI}
    for p in parts:
        for c in QUASI:
            s = df[c][p]
            span = (s.max() - s.min()) if c == "age" else s.nunique() - 1
            loss[c] += len(p) * span / width[c]
    per = {c: loss[c] / n for c in QUASI}
    ncp = sum(per.values()) / len(QUASI)
    print(
        f"RESULT algorithm=anonypy rows={n} k={k} k_reached={min(len(p) for p in parts)} classes={len(parts)} "
        f"suppressed=0 suppressed_pct=0.000 ncp={ncp:.4f} run_s={elapsed:.3f} "
        + " ".join(f"ncp_{c}={v:.4f}" for c, v in per.items())
    )


if __name__ == "__main__":
    main()
