#!/usr/bin/env python3
"""List a GGUF file's tensors or metadata, for tests/bench/make_quant_variants.sh.

    gguf_tensors.py tensors FILE    one line per tensor: name, type name, dims (ne0xne1...),
                                    sha256 of its data bytes (the bytes ggml_nbytes covers,
                                    without the alignment padding after them)
    gguf_tensors.py kv FILE         one line per metadata key: key, type, value (arrays as
                                    their element type, length and sha256 of their raw bytes)

A small reader of its own (standard library only, GGUF v2/v3, little-endian), so the
comparison of requant's output with llama-quantize's shares no code with either.
"""

import hashlib
import struct
import sys

# ggml type id -> (name, elements per block, bytes per block)
TYPES = {0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20),
         6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 9: ("q8_1", 32, 36),
         10: ("q2_K", 256, 84), 11: ("q3_K", 256, 110), 12: ("q4_K", 256, 144),
         13: ("q5_K", 256, 176), 14: ("q6_K", 256, 210), 15: ("q8_K", 256, 292),
         30: ("bf16", 1, 2)}
SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
          11: "<q", 12: "<d"}
KV_TYPE = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool",
           8: "str", 9: "arr", 10: "u64", 11: "i64", 12: "f64"}


class Reader:
    def __init__(self, data):
        self.d = data
        self.p = 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.d, self.p)[0]
        self.p += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.d[self.p:self.p + n]
        self.p += n
        return s.decode("utf-8", "replace")

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.take("<I"), self.take("<Q")
            start = self.p
            for _ in range(n):
                self.value(et)
            raw = self.d[start:self.p]
            return "arr[%s,%d] sha256=%s" % (KV_TYPE.get(et, et), n,
                                             hashlib.sha256(raw).hexdigest()[:16])
        return self.take(SCALAR[t])


def parse(path):
    with open(path, "rb") as f:
        data = f.read()
    r = Reader(data)
    if data[:4] != b"GGUF":
        raise SystemExit("%s: not a GGUF file (magic %r)" % (path, data[:4]))
    r.p = 4
    version = r.take("<I")
    if version not in (2, 3):
        raise SystemExit("%s: GGUF version %d, expected 2 or 3" % (path, version))
    n_tensors, n_kv = r.take("<Q"), r.take("<Q")
    kv = []
    align = 32
    for _ in range(n_kv):
        key = r.string()
        t = r.take("<I")
        v = r.value(t)
        if key == "general.alignment":
            align = v
        kv.append((key, KV_TYPE.get(t, t), v))
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        nd = r.take("<I")
        ne = [r.take("<Q") for _ in range(nd)]
        t = r.take("<I")
        off = r.take("<Q")
        infos.append((name, ne, t, off))
    data_start = (r.p + align - 1) // align * align
    tensors = []
    for name, ne, t, off in infos:
        if t not in TYPES:
            raise SystemExit("%s: tensor %s has unknown type id %d" % (path, name, t))
        tname, be, bb = TYPES[t]
        n = 1
        for x in ne:
            n *= x
        nbytes = n // be * bb
        blob = data[data_start + off:data_start + off + nbytes]
        if len(blob) != nbytes:
            raise SystemExit("%s: tensor %s runs past the end of the file" % (path, name))
        tensors.append((name, tname, "x".join(map(str, ne)), hashlib.sha256(blob).hexdigest()))
    return kv, tensors


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("tensors", "kv"):
        raise SystemExit("usage: gguf_tensors.py tensors|kv FILE")
    kv, tensors = parse(sys.argv[2])
    if sys.argv[1] == "kv":
        for key, t, v in kv:
            print("%s\t%s\t%s" % (key, t, v))
    else:
        for row in tensors:
            print("\t".join(row))


if __name__ == "__main__":
    main()
