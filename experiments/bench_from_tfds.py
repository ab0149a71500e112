"""Seconds `prepare from-tfds` takes to convert a TFRecord copy of a catalog dataset.

    python experiments/bench_from_tfds.py cifar10 --data_dir=DIR [--record]

DIR holds NAME as cnnjax prepares it (array_record at the catalog's version). Its records are
written, in order and in its shards, as the TFRecord copy tfds would have made, into a temporary
data dir (the framing's CRCs by cnnjax.data.crc32c; dataset_info.json with fileFormat "tfrecord";
features.json and the label files as they are), and that copy is converted with
cnnjax.data.from_tfds.convert, timed (reading, CRC checks, parsing every tf.train.Example,
writing array_record). The converted records are then compared with the originals. Prints, and
with --record appends to experiments/results/from_tfds.md, the record count, megabytes and
seconds.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from provenance import append, section_header  # noqa: E402

from cnnjax.data import tfds_store  # noqa: E402
from cnnjax.data.crc32c import crc32c_ranges, masked  # noqa: E402
from cnnjax.data.from_tfds import convert  # noqa: E402

RESULTS = HERE / "results" / "from_tfds.md"


def tfrecord_bytes(records: list[bytes]) -> bytes:
    """The TFRecord framing of `records`: length, its masked CRC, data, the data's masked CRC."""
    lengths = np.array([len(r) for r in records], "<u8")
    data = np.frombuffer(b"".join(records), np.uint8)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    length_crcs = masked(crc32c_ranges(lengths.view(np.uint8), np.arange(len(records)) * 8,
                                       np.full(len(records), 8))).astype("<u4")
    data_crcs = masked(crc32c_ranges(data, starts, lengths)).astype("<u4")
    return b"".join(lengths[i].tobytes() + length_crcs[i].tobytes() + r + data_crcs[i].tobytes()
                    for i, r in enumerate(records))


def tfrecord_copy(stored: tfds_store.StoredDataset, name: str, root: pathlib.Path) -> int:
    """Writes the TFRecord copy of `stored` under root/NAME/VERSION; returns its bytes."""
    target = root / name / stored.path.name
    target.mkdir(parents=True)
    for file in [stored.path / "features.json", *stored.path.glob("*.labels.txt")]:
        shutil.copy(file, target / file.name)
    info = json.loads((stored.path / "dataset_info.json").read_text())
    info["fileFormat"] = "tfrecord"
    (target / "dataset_info.json").write_text(json.dumps(info, indent=2))
    size = 0
    for split in info["splits"]:
        records = stored.records(split["name"])
        shards = [int(n) for n in split["shardLengths"]]
        start = 0
        for i, n in enumerate(shards):
            framed = tfrecord_bytes(records.__getitems__(list(range(start, start + n))))
            file = f"{name}-{split['name']}.tfrecord-{i:05d}-of-{len(shards):05d}"
            (target / file).write_bytes(framed)
            size += len(framed)
            start += n
    return size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--record", action="store_true", help=f"append to {RESULTS}")
    args = parser.parse_args(argv)
    stored = tfds_store.open_dataset(args.name, args.data_dir, "")
    root = pathlib.Path(tempfile.mkdtemp(prefix="bench_from_tfds-"))
    try:
        size = tfrecord_copy(stored, args.name, root)
        start = time.perf_counter()
        path, sizes = convert(args.name, root)
        seconds = time.perf_counter() - start
        converted = tfds_store.open_dataset(args.name, root, "")
        for split, n in sizes.items():
            assert converted.records(split).__getitems__(list(range(n))) == \
                stored.records(split).__getitems__(list(range(n))), split
    finally:
        shutil.rmtree(root)
    count = sum(sizes.values())
    table = ("| dataset | records | TFRecord MB | seconds | MB/s |\n|---|---|---|---|---|\n"
             f"| {args.name} | {count:,} | {size / 1e6:.1f} | {seconds:.1f} | "
             f"{size / 1e6 / seconds:.1f} |\n")
    print(table)
    if args.record:
        append(RESULTS, "from-tfds: converting tfds' TFRecord copies (bench_from_tfds.py)",
               section_header("experiments/bench_from_tfds.py", sys.argv[1:] if argv is None
                              else argv) + table)


if __name__ == "__main__":
    main()
