"""Store quick lab runs for the documentation's lab pages (docs/lab/results/<name>/).

    python docs/lab/store_results.py                 # run every experiment, quick, seed 0
    python docs/lab/store_results.py --from runs/    # copy the newest finished runs instead
    python docs/lab/store_results.py NAME ...        # only these experiments

For each experiment it keeps ``result.json`` (claims, tables, configuration, environment)
and the figures; the HTML report is not kept (the docs render their own page). Runs use one
torch thread, as the lab tests do, so the numbers are reproducible for the seed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import ntkit.lab as lab

RESULTS = Path(__file__).resolve().parent / "results"


def newest_run(runs: Path, name: str) -> Path | None:
    done = sorted(p for p in (runs / name).glob("*") if (p / "result.json").is_file()
                  and not p.name.startswith("."))
    return done[-1] if done else None


def store(run_dir: Path, name: str) -> None:
    dest = RESULTS / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    res = json.loads((run_dir / "result.json").read_text())
    res.pop("log", None)
    (dest / "result.json").write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
    for fig in res.get("figures", []):
        shutil.copy2(run_dir / fig, dest / fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="experiments (default: all)")
    ap.add_argument("--from", dest="runs", type=Path, help="copy finished runs from here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    names = args.names or [n for n, _ in lab.list()]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if args.runs is not None:
                run_dir = newest_run(args.runs, name)
                if run_dir is None:
                    print(f"{name}: no finished run in {args.runs}")
                    continue
            else:
                run_dir = lab.run(name, quick=True, seed=args.seed, out=tmp, progress=False,
                                  threads=1).run_dir
            store(run_dir, name)
            print(f"{name}: stored from {run_dir}")


if __name__ == "__main__":
    main()
