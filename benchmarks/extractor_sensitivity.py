"""Extractor sensitivity: FID of held-out real images under degradation ladders, for each extractor.

    python benchmarks/extractor_sensitivity.py                                   # the shipped mnist5k classifier
    python benchmarks/extractor_sensitivity.py --classifier old.safetensors --classifier runs/clf/classifier.safetensors
    python benchmarks/extractor_sensitivity.py --features inception --inception-weights PATH   # a GPU helps

Every ladder (genvision.metrics.sensitivity) degrades the same held-out images (`--held-out`, default mnist5k:test,
500 digits) and scores each step against the training reference (`--reference`, default mnist5k:train, 4500
digits), beside the real-vs-real floor. Prints one markdown table: FID per extractor and its ratio to that
extractor's floor, and whether each ladder rises monotonically. Exit 1 if a ladder of the first extractor does not.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from genvision.data import load_dataset  # noqa: E402
from genvision.errors import UsageError  # noqa: E402
from genvision.metrics.extractors import ClassifierExtractor, InceptionExtractor  # noqa: E402
from genvision.metrics.sensitivity import is_increasing, sensitivity  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classifier", action="append", default=[],
                        help="a classifier file (repeatable); default the shipped mnist5k classifier")
    parser.add_argument("--features", choices=("classifier", "inception"), default="classifier")
    parser.add_argument("--inception-weights", default="", help="InceptionV3 weights (see docs/evaluation.md)")
    parser.add_argument("--reference", default="mnist5k:train", help="dataset spec of the reference")
    parser.add_argument("--held-out", default="mnist5k:test", help="dataset spec of the held-out images")
    parser.add_argument("--resolution", type=int, default=32, help="decode side in px")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise, translations and class drops")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    try:
        if args.features == "inception":
            extractors = {"inception": InceptionExtractor.load(args.inception_weights)}
        else:
            extractors = {path: ClassifierExtractor.from_file(path) for path in args.classifier} or \
                {"shipped": ClassifierExtractor.shipped()}
        reference = load_dataset(args.reference, args.resolution)
        held_out = load_dataset(args.held_out, args.resolution)
    except UsageError as error:
        print(f"extractor_sensitivity: error: {error}", file=sys.stderr)
        return 2
    tables = {}
    for name, extractor in extractors.items():
        start = time.perf_counter()
        tables[name] = sensitivity(extractor, reference.images, held_out.images, held_out.labels,
                                   held_out.num_classes, args.seed, device=args.device)
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    names = list(tables)
    header = " | ".join(f"{Path(n).stem if n != 'shipped' else n} FID (x floor)" for n in names)
    print(f"reference {args.reference} ({len(reference.images)} images), held-out {args.held_out} "
          f"({len(held_out.images)} images), seed {args.seed}\n")
    print(f"| ladder | step | N | {header} |")
    print("|---|---|---:|" + "---:|" * len(names))
    floors = {name: rows[0].fid for name, rows in tables.items()}
    mode_floors = {name: next((r.fid for r in rows if r.step == "0 classes"), None) for name, rows in tables.items()}
    for index, row in enumerate(tables[names[0]]):
        cells = []
        for name in names:
            result = tables[name][index]
            floor = mode_floors[name] if result.ladder == "mode dropping" else floors[name]
            cells.append(f"{result.fid:.4g} ({result.fid / floor:.3g}x)")
        print(f"| {row.ladder} | {row.step} | {row.num} | {' | '.join(cells)} |")
    failed = False
    print()
    for name in names:
        rows = tables[name]
        ladders = dict.fromkeys(r.ladder for r in rows[1:])
        verdicts = []
        for ladder in ladders:
            values = [r.fid for r in rows if r.ladder == ladder]
            if ladder != "mode dropping":
                values = [floors[name]] + values
            verdicts.append(f"{ladder} {'rises' if is_increasing(values) else 'NOT monotone'}")
            failed |= name == names[0] and not is_increasing(values)
        print(f"{name}: {'; '.join(verdicts)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
