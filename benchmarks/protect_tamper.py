"""Encrypted model files under attack, and key rotation on a large file.

    python benchmarks/protect_tamper.py [--mutations 1000] [--rotate-gb 1] [--seed 0]

1. A DCGAN with the default widths (about 11 MB of weights) is sealed with ``atelier protect``'s envelope
   (1 MiB chunks). Then ``--mutations`` random alterations of the file, each loaded with
   ``Pipeline.load(path, key=...)``: single-byte flips anywhere (prefix, header, key slots, chunks),
   truncations, extensions, swaps of two chunks, header edits that keep it canonical JSON (a changed
   size, digest, chunk size or file id), key-slot edits, and the right file under a wrong key. Every one
   must end in exactly one ``IntegrityError`` (or its ``WrongKeyError``) and no model; counted by outcome.
2. After a full load, no plaintext of the weights exists on disk: the temporary directory (a fresh one for
   this run) and the model's folder are scanned for the weights' bytes.
3. ``rotate`` on a ``--rotate-gb`` GB envelope: median seconds of three rotations (only a key slot changes).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def mutate(data: bytes, rng: random.Random, chunk_plus_tag: int) -> tuple[str, bytes]:
    from atelier.protect.envelope import SLOT_SIZE

    out = bytearray(data)
    h = struct.unpack(">I", data[12:16])[0]
    slots, body = 16 + h, 16 + h + 2 * SLOT_SIZE
    kind = rng.choice(["flip", "flip", "flip-prefix", "flip-header", "flip-slot", "truncate", "extend", "swap",
                       "header-edit", "slot-edit"])
    if kind == "flip":
        out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
    elif kind == "flip-prefix":
        out[rng.randrange(16)] ^= rng.randrange(1, 256)
    elif kind == "flip-header":
        out[16 + rng.randrange(h)] ^= rng.randrange(1, 256)
    elif kind == "flip-slot":
        out[slots + rng.randrange(2 * SLOT_SIZE)] ^= rng.randrange(1, 256)
    elif kind == "truncate":
        del out[rng.randrange(len(out)):]
    elif kind == "extend":
        out += os.urandom(rng.choice([1, 16, chunk_plus_tag]))
    elif kind == "swap":
        n = (len(data) - body) // chunk_plus_tag
        i, j = rng.sample(range(n), 2)
        a, b = body + i * chunk_plus_tag, body + j * chunk_plus_tag
        out[a:a + chunk_plus_tag], out[b:b + chunk_plus_tag] = data[b:b + chunk_plus_tag], data[a:a + chunk_plus_tag]
    elif kind == "header-edit":  # still canonical JSON, so only the authentication can catch it
        header = json.loads(data[16:16 + h])
        field = rng.choice(["plaintext_size", "plaintext_sha256", "chunk_size", "file_id"])
        if field == "plaintext_size":
            header[field] += rng.choice([-1, 1])
        elif field == "chunk_size":
            header[field] //= 2
        else:
            header[field] = os.urandom(len(header[field]) // 2).hex()
        new = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        out = bytearray(data[:12] + struct.pack(">I", len(new)) + new + data[16 + h:])
    else:  # slot edit: a different key id, or different KDF parameters, kept as canonical JSON
        slot = json.loads(data[slots:slots + SLOT_SIZE].rstrip(b"\0"))
        if rng.random() < 0.5:
            slot["key_id"] = os.urandom(8).hex()
        else:
            slot["nonce"] = os.urandom(12).hex()
        new = json.dumps(slot, sort_keys=True, separators=(",", ":")).encode()
        out[slots:slots + SLOT_SIZE] = new + b"\0" * (SLOT_SIZE - len(new))
    return kind, bytes(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutations", type=int, default=1000)
    parser.add_argument("--rotate-gb", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="atelier-tamper-"))
    fresh_tmp = work / "tmp"
    fresh_tmp.mkdir()
    os.environ["TMPDIR"] = str(fresh_tmp)
    tempfile.tempdir = str(fresh_tmp)

    import torch

    from atelier.models.registry import create_model
    from atelier.pipelines import Pipeline
    from atelier.protect.envelope import ENVELOPE_NAME, TAG, IntegrityError, Key, rotate, seal, seal_model_dir

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    key, wrong = Key.generate(), Key.generate()
    plain = create_model("dcgan").save_pretrained(work / "plain")
    weights = (plain / "model.safetensors").read_bytes()
    sealed_dir = work / "sealed"
    seal_model_dir(plain, sealed_dir, key)
    (plain / "model.safetensors").unlink()
    envelope = sealed_dir / ENVELOPE_NAME
    good = envelope.read_bytes()
    chunk = json.loads(good[16:16 + struct.unpack(">I", good[12:16])[0]])["chunk_size"]

    outcomes: Counter = Counter()
    by_kind: dict[str, Counter] = {}
    bad = work / "bad" / ENVELOPE_NAME
    bad.parent.mkdir()
    start = time.perf_counter()
    for i in range(args.mutations):
        if i % 50 == 49:
            kind, data = "wrong-key", good
        else:
            kind, data = mutate(good, rng, chunk + TAG)
            if data == good:
                kind, data = "wrong-key", good
        bad.write_bytes(data)
        try:
            Pipeline.load(bad.parent, key=wrong if kind == "wrong-key" else key)
            result = "LOADED"
        except IntegrityError as exc:
            result = type(exc).__name__
        except Exception as exc:  # anything else is a finding
            result = f"other:{type(exc).__name__}: {exc}"[:200]
        outcomes[result] += 1
        by_kind.setdefault(kind, Counter())[result] += 1
    mutation_s = time.perf_counter() - start

    # a full load, then look for the weights anywhere this process may have written
    loaded = Pipeline.load(sealed_dir, key=key)
    marker = weights[-4096:]
    found = [str(p) for root in (fresh_tmp, sealed_dir, plain) for p in root.rglob("*")
             if p.is_file() and marker in p.read_bytes()]

    # rotation time on a large envelope
    big = work / "big.atlenc"
    size = int(args.rotate_gb * 2**30)
    seal(os.urandom(1 << 20) * (size >> 20), key, big)
    keys = [key, wrong]
    times = []
    for r in range(3):
        t = time.perf_counter()
        rotate(big, keys[r % 2], keys[(r + 1) % 2])
        times.append(time.perf_counter() - t)
    big_bytes = big.stat().st_size
    big.unlink()

    print(json.dumps({
        "benchmark": "protect_tamper", "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "model": {"name": "dcgan", "weights_bytes": len(weights), "envelope_bytes": len(good), "chunk_size": chunk,
                  "family": loaded.family},
        "mutations": {"n": args.mutations, "outcomes": dict(outcomes),
                      "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())}, "seconds": round(mutation_s, 2),
                      "all_refused_with_one_integrity_error": set(outcomes) <= {"IntegrityError", "WrongKeyError"}},
        "plaintext_on_disk_after_load": found,
        "rotation": {"envelope_bytes": big_bytes, "seconds": [round(t, 4) for t in times],
                     "median_s": round(statistics.median(times), 4)},
    }, indent=1))


if __name__ == "__main__":
    main()
