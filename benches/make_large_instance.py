#!/usr/bin/env python3
"""Writes a Part 10 multi-frame 8-bit secondary capture of FRAMES 1 MiB frames to PATH without
holding it in memory (for benches/receive_rss.sh and benches/object_store_bench.sh).

usage: make_large_instance.py PATH FRAMES
"""
import struct, sys
path, frames = sys.argv[1], int(sys.argv[2])
SC, TS = "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.1.2.1"
SOP = "1.2.826.0.1.3680043.10.1452.88.1.1.1"
def el(g, e, vr, v):
    if isinstance(v, str): v = v.encode()
    if len(v) % 2: v += b"\0" if vr == b"UI" else b" "
    return struct.pack("<HH", g, e) + vr + struct.pack("<H", len(v)) + v
meta_body = (struct.pack("<HH", 2, 1) + b"OB\0\0" + struct.pack("<I", 2) + b"\0\1"
             + el(2, 2, b"UI", SC) + el(2, 3, b"UI", SOP) + el(2, 0x10, b"UI", TS)
             + el(2, 0x12, b"UI", "1.2.826.0.1.3680043.10.1452.1"))
us = lambda v: struct.pack("<H", v)
ds = (el(8, 0x16, b"UI", SC) + el(8, 0x18, b"UI", SOP) + el(8, 0x60, b"CS", "OT")
      + el(0x10, 0x20, b"LO", "RSSBENCH") + el(0x20, 0xD, b"UI", "1.2.826.0.1.3680043.10.1452.88.1")
      + el(0x20, 0xE, b"UI", "1.2.826.0.1.3680043.10.1452.88.1.1") + el(0x28, 2, b"US", us(1))
      + el(0x28, 4, b"CS", "MONOCHROME2") + el(0x28, 8, b"IS", str(frames))
      + el(0x28, 0x10, b"US", us(1024)) + el(0x28, 0x11, b"US", us(1024))
      + el(0x28, 0x100, b"US", us(8)) + el(0x28, 0x101, b"US", us(8)) + el(0x28, 0x102, b"US", us(7))
      + el(0x28, 0x103, b"US", us(0)) + struct.pack("<HH", 0x7FE0, 0x10) + b"OB\0\0"
      + struct.pack("<I", frames * 1024 * 1024))
frame = bytes((i * 2654435761 >> 24) & 0xFF for i in range(1024 * 1024))
with open(path, "wb") as f:
    f.write(b"\0" * 128 + b"DICM" + el(2, 0, b"UL", struct.pack("<I", len(meta_body))) + meta_body + ds)
    for _ in range(frames):
        f.write(frame)
