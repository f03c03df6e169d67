#!/usr/bin/env python3
"""Writes N copies of a DICOM file, each with fresh Study/Series/SOP Instance UIDs (10 instances a
series, 100 a study), split across K folders for K parallel senders. Uses only the standard
library: the UIDs are replaced in place with ones of the same length, so every other byte stays.

usage: make_instances.py TEMPLATE OUT_DIR N K
"""
import pathlib
import sys


def main() -> None:
    template, out, n, k = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    data = pathlib.Path(template).read_bytes()
    # The CT sample's UIDs (dicom-samples/ct_small_explicit_le.dcm).
    study = b"1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    series = b"1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
    sop = b"1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    for uid in (study, series, sop):
        assert uid in data, f"{template} does not hold {uid!r}"

    def renumber(uid: bytes, n: int) -> bytes:
        tail = str(n).zfill(11).encode()
        return uid[: len(uid) - 11] + tail

    for d in range(k):
        (out / f"part{d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        copy = data.replace(sop, renumber(sop, i)).replace(series, renumber(series, i // 10)).replace(study, renumber(study, i // 100))
        (out / f"part{i % k}" / f"ct{i:06d}.dcm").write_bytes(copy)


if __name__ == "__main__":
    main()
