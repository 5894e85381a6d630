"""Robustness: a fixed corpus of bad inputs through the real CLI, each in its own process.

    python benchmarks/robustness.py [--jobs 2] [--timeout 120] [--only WORD]

Each case is a command line a hostile-but-ordinary user might type (a bad number, a broken file, a
run directory that already holds work, a signal mid-run) and what a correct answer looks like. A case
is scored as one of:

- ``clean``: the expected outcome: an ``atelier: error:`` line naming the problem (exit status 2), or
  the work done with the expected note on the console (exit status 0), or a clean stop (128+N);
- ``traceback``: a Python traceback, or any other exit status;
- ``hang``: no answer within ``--timeout`` seconds (the process is killed);
- ``silent``: exit status 0 where the input should have been refused or remarked on;
- ``lost``: a file that existed before the command was changed or removed by it.

The goal is 0 tracebacks, 0 hangs, 0 silent results, 0 lost files. Prints one JSON object: the totals,
then every case with its outcome, seconds, peak memory and the last line it printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# Runs the CLI and reports its peak resident memory on the way out.
RUNNER = ("import atexit, resource, sys\n"
          "atexit.register(lambda: sys.stderr.write(f'\\n@@maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n'))\n"
          "from atelier.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")


@dataclass
class Case:
    name: str  # what class of input it is: the headings
    argv: list[str]
    expect: str = "error"  # error | ok | stop
    says: tuple[str, ...] = ()  # words the console must show (the error or the note), case-insensitive
    protect: tuple[str, ...] = ()  # paths whose files must survive unchanged
    signal_after: float | None = None  # send SIGTERM after this many seconds (expect "stop")
    result: dict = field(default_factory=dict)


def tiny_png(path: Path, size: int = 24, colour: bool = True, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if colour else (size, size)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path)
    return path


def bomb_png(path: Path, side: int = 60000) -> Path:
    """A PNG whose header declares side x side pixels (3.6 G) but holds almost nothing."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def run_cli(argv: list[str], cwd: Path, timeout: float, signal_after: float | None = None) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "default", "ATELIER_HOME": str(cwd / "home")}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        if signal_after is not None:
            try:
                out, err = proc.communicate(timeout=signal_after)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                out, err = proc.communicate(timeout=timeout)
        else:
            out, err = proc.communicate(timeout=timeout)
        hang = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        hang = True
    maxrss = next((int(line.split()[1]) * 1024 for line in err.splitlines() if line.startswith("@@maxrss")), None)
    err = "\n".join(line for line in err.splitlines() if not line.startswith("@@maxrss")).strip()
    return {"code": proc.returncode, "hang": hang, "seconds": round(time.perf_counter() - start, 2),
            "peak_rss_mb": round(maxrss / 2**20) if maxrss else None, "stdout": out, "stderr": err}


def fingerprint(paths: tuple[str, ...], cwd: Path) -> dict[str, str]:
    out = {}
    for p in paths:
        root = cwd / p
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file()) if root.exists() else []
        for f in files:
            out[str(f.relative_to(cwd))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def score(case: Case, r: dict, before: dict, after: dict) -> str:
    text = (r["stderr"] + "\n" + r["stdout"]).lower()
    if r["hang"]:
        return "hang"
    if "traceback (most recent call last)" in text:
        return "traceback"
    if any(after.get(k) != v for k, v in before.items()):
        return "lost"
    if case.expect == "error":
        if r["code"] == 0:
            return "silent"
        ok = r["code"] == 2 and "atelier: error:" in text
    elif case.expect == "stop":
        ok = r["code"] is not None and r["code"] >= 128
    else:
        ok = r["code"] == 0
    if ok and not all(w.lower() in text for w in case.says):
        return "silent" if r["code"] == 0 else "traceback"
    return "clean" if ok else "traceback"


def build_world(root: Path) -> None:
    """The files the cases point at: a tiny trained run, broken images and configs."""
    run = [sys.executable, "-m", "atelier.cli", "train", "gan", "--data", "digits", "--batch-size", "8", "--g-width",
           "8", "--d-width", "8", "--latent-dim", "8", "--steps", "4", "--checkpoint-every", "2", "--no-progress",
           "--no-tensorboard", "--out", str(root / "run")]
    subprocess.run(run, check=True, cwd=root, capture_output=True, env={**os.environ, "ATELIER_HOME": str(root / "home")})
    # fit and cache the digits classifier that evaluate scores in, once, so no case pays for it
    subprocess.run([sys.executable, "-m", "atelier.cli", "evaluate", str(root / "run"), "--n", "20", "--metrics", "fid",
                    "--quiet", "--out", str(root / "warm-up")], check=True, cwd=root, capture_output=True,
                   env={**os.environ, "ATELIER_HOME": str(root / "home")})
    shutil.copytree(root / "run", root / "nan-run")
    from safetensors.torch import load_file, save_file

    for weights in (root / "nan-run").rglob("model.safetensors"):
        state = load_file(weights)
        for k, v in state.items():
            if v.is_floating_point():
                v.view(-1)[:3] = float("nan")
        save_file(state, weights)
    (root / "images").mkdir()
    for i in range(4):
        tiny_png(root / "images" / f"{i}.png", seed=i)
    (root / "bomb").mkdir()
    bomb_png(root / "bomb" / "000.png")
    for i in range(12):
        tiny_png(root / "bomb" / f"{i + 1:03d}.png", seed=i)
    (root / "unreadable").mkdir()
    (root / "unreadable" / "000.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    for i in range(12):
        tiny_png(root / "unreadable" / f"{i + 1:03d}.png", seed=i)
    (root / "digits-like").mkdir()
    for i in range(12):
        tiny_png(root / "digits-like" / f"{i}.png", size=40, colour=True, seed=i)
    configs = {
        "list.json": "[1, 2, 3]", "null.json": '{"train": null}', "string.json": '{"train": {"steps": "many"}}',
        "listval.json": '{"model": {"g_width": [64]}}', "inf.json": '{"train": {"steps": 1e400}}',
        "nan.json": '{"train": {"steps": NaN}}', "neg.toml": "[model]\ng_width = -3\n",
        "huge.toml": "[model]\ng_width = 10000000\n", "badtoml.toml": "[model\n", "minutes.json":
        '{"train": {"minutes": Infinity}}', "typo.json": '{"train": {"stpes": 3}}',
    }
    configs["aug-bad.yaml"] = "ops:\n  - {name: blur, p: 7}\n"
    configs["aug-anchor.yaml"] = "&ps:\n  - {name: blur}\n"
    for name, text in configs.items():
        (root / name).write_text(text)


def corpus() -> list[Case]:
    tiny = ["--data", "digits", "--batch-size", "8", "--g-width", "8", "--d-width", "8", "--latent-dim", "8",
            "--no-progress", "--no-tensorboard"]
    train = ["train", "gan", *tiny]
    # a config file's own values must not be overridden by flags: only the data and logging are given
    from_file = ["train", "gan", "--data", "digits", "--no-progress", "--no-tensorboard"]
    cases = [
        # -- lost work
        Case("lost work", [*train, "--out", "run", "--steps", "1"], says=("--resume", "--overwrite"), protect=("run",)),
        Case("lost work", ["sample", "run", "--n", "4", "--out", "images"], says=("--overwrite",),
             protect=("images",)),
        Case("lost work", [*train, "--out", "sigrun", "--steps", "100000"], expect="stop", signal_after=25.0),
        # -- unbounded work from one number
        Case("unbounded", ["sample", "run", "--n", "1000000000", "--out", "s.npz"], says=("--n", "1,000,000")),
        Case("unbounded", ["sample", "run", "--n", "5000", "--out", "s.png"], says=("1024",)),
        Case("unbounded", ["sample", "run", "--n", "8", "--truncation", "1e-30", "--out", "t.png"], expect="ok"),
        Case("unbounded", ["sample", "run", "--n", "8", "--truncation", "0", "--out", "t0.png"], says=("truncation",)),
        Case("unbounded", ["sample", "run", "--n", "8", "--truncation", "nan", "--out", "tn.png"],
             says=("truncation",)),
        Case("unbounded", [*from_file, "--config", "inf.json", "--out", "r-inf"], says=("steps", "finite")),
        Case("unbounded", [*from_file, "--config", "nan.json", "--out", "r-nan"], says=("steps",)),
        Case("unbounded", [*from_file, "--config", "minutes.json", "--out", "r-min"], says=("minutes",)),
        Case("unbounded", [*train, "--lr", "nan", "--out", "r-lr"], says=("--lr", "finite")),
        Case("unbounded", ["explore", "interpolate", "run", "--seeds", "1", "2", "--steps", "100000000", "--out",
                           "i.png"], says=("--steps",)),
        Case("unbounded", ["explore", "traverse", "run", "--steps", "1000000000", "--out", "tr.png"], says=("--steps",)),
        Case("unbounded", ["augment", "images", "--copies", "1000000", "-o", "aug"], says=("--copies",)),
        Case("unbounded", ["stylize", "images/0.png", "images/1.png", "--steps", "1000000000", "-o",
                           "st.png", "--offline"], says=("steps",)),
        Case("unbounded", ["evaluate", "run", "--n", "1000000000"], says=("n",)),
        # -- tracebacks instead of messages: types, shapes, sizes
        Case("bad number", [*from_file, "--config", "list.json", "--out", "r1"], says=("mapping",)),
        Case("bad number", [*from_file, "--config", "null.json", "--out", "r2"], says=("train",)),
        Case("bad number", [*from_file, "--config", "string.json", "--out", "r3"], says=("steps", "whole number")),
        Case("bad number", [*from_file, "--config", "listval.json", "--out", "r4"], says=("g_width",)),
        Case("bad number", [*from_file, "--config", "neg.toml", "--out", "r5"], says=("g_width",)),
        Case("bad number", [*from_file, "--config", "huge.toml", "--out", "r6"], says=("g_width",)),
        Case("bad number", [*from_file, "--config", "badtoml.toml", "--out", "r7"], says=("toml",)),
        Case("bad number", [*from_file, "--config", "typo.json", "--out", "r8"], says=("stpes",)),
        Case("bad number", [*train, "--latent-dim", "0", "--out", "r9"], says=("--latent-dim",)),
        Case("bad number", [*train, "--g-width", "-3", "--out", "r10"], says=("--g-width",)),
        Case("bad number", [*train, "--g-width", "60000", "--out", "r11"], says=("would need", "memory")),
        Case("bad number", [*train, "--resolution", "100000", "--out", "r12"], says=("--resolution",)),
        Case("bad number", [*train, "--resolution", "4096", "--out", "r13"], says=("would need", "memory")),
        Case("bad number", [*train, "--batch-size", "0", "--out", "r14"], says=("--batch-size",)),
        Case("bad number", [*train, "--ema-decay", "1.5", "--out", "r15"], says=("--ema-decay",)),
        Case("bad number", [*train, "--betas", "0.5", "nan", "--out", "r16"], says=("betas",)),
        Case("bad number", [*train, "--seed", "-1", "--out", "r17"], says=("--seed",)),
        Case("bad number", ["train", "vae", "--data", "digits", "--beta", "-1", "--out", "r18"], says=("--beta",)),
        Case("bad number", ["train", "vae", "--data", "digits", "--sigma", "0", "--out", "r19"], says=("--sigma",)),
        Case("bad number", ["stylize", "images/0.png", "images/1.png", "--size", "3", "-o", "st2.png",
                            "--offline"], says=("size",)),
        Case("bad number", ["stylize", "images/0.png", "images/1.png", "--style-weight", "-1", "-o",
                            "st3.png", "--offline"], says=("style_weight",)),
        Case("bad number", ["evaluate", "run", "--n", "5"], says=("n",)),
        Case("bad number", ["evaluate", "run", "--copy-quantile", "2"], says=("copy",)),
        Case("bad number", ["translate", "run", "images", "-o", "tr", "--size", "100000"], says=("--size",)),
        Case("bad number", [*train, "--device", "0", "--out", "r21", "--steps", "1"], says=("device",)),
        Case("bad number", [*train, "--device", "cuda:7", "--out", "r22", "--steps", "1"], says=("cuda",)),
        Case("bad number", ["sample", "run", "--seed", "-1", "--out", "neg.png"], says=("seed",)),
        Case("bad number", ["sample", "run", "--label", "3", "--out", "lab.png"], says=("label",)),
        Case("bad number", ["explore", "traverse", "run", "--range", "nan", "--out", "trn.png"], says=("--range",)),
        Case("bad number", ["evaluate", "run", "--metrics", "fid,bogus"], says=("bogus",)),
        Case("bad number", ["augment", "images", "--config", "aug-bad.yaml", "-o", "aug2"], says=("p must be",)),
        Case("bad number", ["augment", "images", "--config", "aug-anchor.yaml", "-o", "aug3"], says=("ops",)),
        Case("bad number", ["stylize", "images/0.png", "images/1.png", "--style-layers", "relu1_1:nan", "-o",
                            "st4.png", "--offline"], says=("style_layers",)),
        Case("bad number", ["train", "cyclegan", "--out", "r23", "--steps", "1"], says=("--domain-a",)),
        Case("bad number", ["train", "fast-style", "--out", "r24", "--steps", "1", "--no-download"], says=("style",)),
        Case("reader", [*train, "--config", "images", "--out", "r25"], says=("images",)),
        Case("reader", ["sample", "run", "--n", "4", "--out", "/dev/null/x.png"], says=("/dev/null",)),
        # -- readers: the first file of a folder decides the size
        Case("reader", ["evaluate", "bomb", "--data", "digits", "--n", "20", "--out", "e1"], expect="ok",
             says=("000.png",)),
        Case("reader", ["evaluate", "unreadable", "--data", "digits", "--n", "20", "--out", "e2"], expect="ok",
             says=("000.png",)),
        Case("reader", [*train, "--data", "folder:unreadable", "--strict", "--out", "r20", "--steps", "1"],
             says=("000.png", "leave out --strict")),
        Case("reader", ["sample", "missing-run", "--out", "x.png"], says=("missing-run",)),
        Case("reader", ["sample", "images", "--out", "x.png"], says=("images",)),
        # -- silent wrong results
        Case("silent result", ["sample", "nan-run", "--n", "4", "--out", "nan.png"], says=("nan", "--allow-nonfinite")),
        Case("silent result", ["evaluate", "digits-like", "--data", "digits", "--n", "20", "--out", "e3"],
             expect="ok", says=("note:", "grey")),
    ]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--only", default=None, help="run only the cases whose class contains this word")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="atelier-robustness-"))
    try:
        build_world(root)
        cases = [c for c in corpus() if args.only is None or args.only in c.name]

        def one(case: Case) -> Case:
            before = fingerprint(case.protect, root)
            r = run_cli(case.argv, root, args.timeout, case.signal_after)
            after = fingerprint(case.protect, root)
            outcome = score(case, r, before, after)
            if case.expect == "stop" and outcome == "clean":  # and the run must continue where it stopped
                resumed = run_cli([*case.argv[:case.argv.index("--steps")], "--steps", "1", "--out",
                                   case.argv[case.argv.index("--out") + 1], "--resume"], root, args.timeout)
                outcome = outcome if resumed["code"] == 0 else "lost"
            last = (r["stderr"] or r["stdout"]).strip().splitlines()
            case.result = {"outcome": outcome, "code": r["code"], "seconds": r["seconds"],
                           "peak_rss_mb": r["peak_rss_mb"], "said": last[-1][:300] if last else ""}
            return case

        with ThreadPoolExecutor(args.jobs) as pool:
            done = list(pool.map(one, cases))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    totals = {k: sum(c.result["outcome"] == k for c in done) for k in ("clean", "traceback", "hang", "silent", "lost")}
    by_class: dict[str, dict[str, int]] = {}
    for c in done:
        by_class.setdefault(c.name, {}).setdefault(c.result["outcome"], 0)
        by_class[c.name][c.result["outcome"]] += 1
    print(json.dumps({
        "benchmark": "robustness", "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "cases": len(done), **totals, "by_class": by_class,
        "max_peak_rss_mb": max((c.result["peak_rss_mb"] or 0) for c in done),
        "results": [{"class": c.name, "argv": " ".join(c.argv), **c.result} for c in done],
    }, indent=1))


if __name__ == "__main__":
    main()
