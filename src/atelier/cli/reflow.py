"""``atelier reflow RUN --out DIR``: one reflow round, a flow model that samples in one or two steps.

A thin layer over :func:`atelier.train.reflow.reflow`: loads RUN (a run directory or a saved model),
writes the student as a saved model in DIR (weights, config.json) with ``reflow.json`` beside it (the
settings, the loss every 50 steps, the seconds spent), all or nothing."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path


def _cmd_reflow(args) -> int:
    from atelier.cli.limits import check_int
    from atelier.io import atomic_write_json
    from atelier.models.pretrained import load_pretrained
    from atelier.signals import stop_on_signals
    from atelier.train.reflow import ReflowConfig, reflow

    out = Path(args.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; choose another or pass --overwrite")
    check_int(args.pairs, "--pairs", high=10**7)
    cfg = ReflowConfig(pairs=args.pairs, teacher_steps=args.teacher_steps, teacher_sampler=args.teacher_sampler,
                       guidance=args.guidance, steps=args.steps, minutes=args.minutes, batch_size=args.batch_size,
                       lr=args.lr, student_steps=args.student_steps, seed=args.seed)
    teacher = load_pretrained(args.run_dir)
    if getattr(teacher, "family", None) != "flow":
        raise ValueError(f"reflow needs a flow model; {args.run_dir} holds a {getattr(teacher, 'family', '?')} model")
    with stop_on_signals() as stop:
        result = reflow(teacher, cfg, progress=not args.quiet, should_stop=lambda: stop.requested)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        result.student.save_pretrained(staging)
        atomic_write_json(staging / "reflow.json", {
            "teacher": str(args.run_dir), "config": asdict(cfg), "steps": result.steps,
            "pair_seconds": result.pair_seconds, "train_seconds": result.train_seconds, "history": result.history})
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    last = result.history[-1]["loss"] if result.history else float("nan")
    print(json.dumps({"out": str(out), "steps": result.steps, "final_loss": last,
                      "pair_seconds": round(result.pair_seconds, 1), "train_seconds": round(result.train_seconds, 1),
                      "student": f"{cfg.student_sampler}, {cfg.student_steps} steps"}))
    return 0


def add_reflow_parser(sub) -> None:
    p = sub.add_parser("reflow", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="flow models: one reflow round, so that 1-2 solver steps give usable samples")
    p.add_argument("run_dir", metavar="RUN", help="a flow run directory or saved model (the teacher)")
    p.add_argument("--out", required=True, help="where the student is saved (a model folder)")
    p.add_argument("--pairs", type=int, default=10000, help="(noise, image) pairs drawn from the teacher")
    p.add_argument("--teacher-steps", type=int, default=16, help="solver steps per teacher sample")
    p.add_argument("--teacher-sampler", default="dpm++2m", choices=["euler", "heun", "dpm++2m", "ab2"])
    p.add_argument("--guidance", type=float, default=1.0, help="conditional teachers: the guidance of the pairs "
                   "(the student learns the guided flow; sample it at guidance 1)")
    p.add_argument("--steps", type=int, default=2000, help="student optimisation steps")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock cap on the fine-tuning")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--student-steps", type=int, default=2, help="the student's default solver steps (Euler)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_reflow)
