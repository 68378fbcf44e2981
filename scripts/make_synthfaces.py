"""Render a SynthFaces dataset folder: train and test splits with disjoint persons, labels, meta.json.

    python scripts/make_synthfaces.py --res 64 --n 50000 --test-n 5000 --out data/synthfaces64 --workers 2

``--n`` train images and ``--test-n`` test images (default: a tenth of ``--n``, rounded down, so ``--n 6`` writes
6 images and no test split); the first line printed says how many of each, and with how many processes.
Writes ``OUT/images/{train,test}/<index:06d>.png``, ``OUT/labels_{train,test}.csv`` and ``OUT/meta.json``; see
docs/SYNTHFACES.md. ``--docs DIR`` also writes the sample and attribute-sweep grids used in the docs
(``--n 0 --test-n 0 --docs docs`` writes only those).
"""
import argparse
import os
import sys
import time

from clcae import cli
from clcae.data import synthfaces as sf


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output folder (created; an existing meta.json must match)")
    p.add_argument("--res", type=int, default=64, choices=(64, 128, 256), help="image size in pixels")
    p.add_argument("--n", type=cli.non_negative_int, default=50000, help="number of train images")
    p.add_argument("--test-n", type=cli.non_negative_int, default=None,
                   help="number of test images (default: a tenth of --n, rounded down; 0: no test split)")
    p.add_argument("--persons", type=int, default=sf.DEFAULT_PERSONS["train"], help="train persons")
    p.add_argument("--test-persons", type=int, default=sf.DEFAULT_PERSONS["test"], help="test persons")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (identities, attributes, detail)")
    p.add_argument("--workers", type=cli.positive_int, default=os.cpu_count() or 1,
                   help="rendering processes (default: every core; never more than the 64-image chunks to render)")
    p.add_argument("--docs", default=None, help="also write synthfaces_samples.png and "
                   "synthfaces_attributes.png to this folder")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    test_n_default = args.test_n is None
    if test_n_default:
        args.test_n = args.n // 10
    splits = [(s, n, p) for s, n, p in (("train", args.n, args.persons), ("test", args.test_n, args.test_persons))
              if n > 0]
    if splits and not args.out:
        return cli.report_error("--out is required to write images (use --n 0 --test-n 0 with --docs for grids "
                                "only)")
    workers = max([min(args.workers, sf.render_chunks(n)) for _, n, _ in splits], default=1)
    if splits:
        plan = " and ".join(f"{n} {s} image(s)" for s, n, _ in splits)
        print(f"writing {plan} at {args.res}px to {args.out}"
              + ("" if args.test_n else " (no test split" + (": --test-n defaults to a tenth of --n"
                                                               if test_n_default else "") + ")")
              + f" with {workers} worker process(es)", flush=True)
    start = time.time()
    for split, n, persons in splits:
        t0 = time.time()
        labels = sf.write_dataset(args.out, n, args.res, split, args.seed, args.workers, n_persons=persons,
                                  progress=True)
        dt = time.time() - t0
        print(f"{split}: {n} images of {min(n, persons)} persons at {args.res}px -> {labels} "
              f"({dt:.1f} s, {n / max(dt, 1e-9):.0f} img/s)")
    if splits:
        total = time.time() - start
        n_all = sum(n for _, n, _ in splits)
        used = [(s, sf.person_ids_for_split(s, p)[:n]) for s, n, p in splits]
        ranges = ", ".join(f"{s} person ids {ids[0]}..{ids[-1]}" for s, ids in used)
        print(f"done: {n_all} images in {total:.1f} s ({n_all / max(total, 1e-9):.0f} img/s with {workers} "
              f"worker process(es)); {ranges}; labels and meta.json in {args.out}")
    if args.docs:
        from PIL import Image

        os.makedirs(args.docs, exist_ok=True)
        Image.fromarray(sf.sample_grid(8, 8, 64, args.seed)).save(os.path.join(args.docs, "synthfaces_samples.png"))
        Image.fromarray(sf.attribute_sweep_grid(seed=args.seed, res=64)).save(
            os.path.join(args.docs, "synthfaces_attributes.png"))
        print(f"wrote grids to {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
