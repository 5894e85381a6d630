"""``atelier serve``: the studio (HTTP API and web page), its tokens, its workers and its ratings."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEMO_DIR = "atelier-demo"


def _settings(args, **extra):
    from atelier.serve.settings import ServeConfig

    kwargs = {k: getattr(args, k) for k in ("db", "workers", "max_batch", "max_wait_ms", "max_pending", "device",
                                            "checkpoints", "key_file", "key_env", "require_signed",
                                            "failed_logins", "user_rate", "generate_rate")
              if getattr(args, k, None) is not None}
    kwargs.setdefault("models", tuple(getattr(args, "models", None) or ()))
    if getattr(args, "trusted", None):
        kwargs["trusted"] = tuple(args.trusted)
    return ServeConfig(**{**kwargs, **extra})


def _database(args):
    from atelier.serve.db import Database
    from atelier.serve.settings import default_db_url

    return Database(args.db or default_db_url())


def _set_threads(threads: int | None) -> int:
    """Torch threads for the forward passes: by default all cores but one, which the event loop (or the
    queue's polling) needs; measured on 2 cores, 1 thread served more images/s than 2 (BENCHMARKS.md)."""
    import os

    import torch

    from atelier.cli.limits import check_int

    check_int(threads, "--threads", low=1, high=1024)
    n = threads or max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(n)
    return n


def _no_models_advice(where: list[str]) -> str:
    looked = ", ".join(where) if where else f"./{DEMO_DIR} (the default)"
    return (f"no models found in {looked}. Train some first: `make demo` (about 15 minutes, offline) writes "
            f"{DEMO_DIR}/, then `atelier serve --models {DEMO_DIR}` (or `make studio`); or `atelier train gan "
            "--out runs/gan` and `atelier serve --models runs`")


def _cmd_serve(args) -> int:
    import uvicorn

    from atelier.serve import auth
    from atelier.serve.app import create_app
    from atelier.serve.catalog import Catalog

    roots = list(args.models or ([DEMO_DIR] if Path(DEMO_DIR).is_dir() else []))
    if not roots:
        print(f"atelier serve: {_no_models_advice([])}", file=sys.stderr)
        return 2
    for root in roots:
        if not Path(root).exists():
            print(f"atelier serve: {root}: no such folder. {_no_models_advice(roots)}", file=sys.stderr)
            return 2
    _set_threads(args.threads)
    settings = _settings(args, models=tuple(roots))
    catalog = Catalog.from_folders(roots, settings.device, checkpoints=settings.checkpoints,
                                   key=settings.model_key(), trusted=settings.trusted_keys())
    for r in catalog.refused:
        print(f"atelier serve: not serving {r.path}: {r.reason}", file=sys.stderr)
    if not len(catalog):
        print(f"atelier serve: {_no_models_advice(roots)}", file=sys.stderr)
        return 2
    db = _database(args)
    if not auth.has_tokens(db):
        new = auth.create_token(db, "admin", ["admin"], label="created on first start")
        print(f"first start: an admin token was created. It is shown this once; keep it (only its hash is stored):\n"
              f"  admin token: {new.token}\n"
              f"more tokens: atelier serve token create NAME --scopes read,generate,rate", flush=True)
    app = create_app(settings, catalog=catalog, db=db)
    print(f"studio: {len(catalog)} models ({', '.join(sorted(catalog.entries)[:8])}"
          f"{', ...' if len(catalog) > 8 else ''}); database {db.describe()}", flush=True)
    print(f"open http://{args.host}:{args.port}/ (API documentation at /docs, after logging in)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def _cmd_token_create(args) -> int:
    from datetime import timedelta

    from atelier.cli.limits import check_float
    from atelier.serve import auth

    check_float(args.expires_days, "--expires-days", high=3650)
    from atelier.serve import audit

    db = _database(args)
    new = auth.create_token(db, args.name, args.scopes.split(","),
                            models=args.models.split(",") if args.models else None, label=args.label or "",
                            expires_in=timedelta(days=args.expires_days) if args.expires_days else None)
    audit.record(db, "token.create", actor="cli", target=new.key_id,
                 detail={"principal": new.principal, "scopes": list(new.scopes), "models": new.models},
                 free_text={"label": args.label or ""})
    print(f"token for {new.principal} ({', '.join(new.scopes)}"
          f"{'; models ' + ', '.join(new.models) if new.models else ''}"
          f"{'; expires ' + new.expires_at.isoformat(timespec='minutes') if new.expires_at else ''}), shown once:")
    print(new.token)
    return 0


def _cmd_token_list(args) -> int:
    from atelier.serve import auth

    rows = auth.list_tokens(_database(args))
    if not rows:
        print("no tokens yet (the first `atelier serve` creates an admin token)")
    for t in rows:
        print(f"{t['key_id']}  {t['principal']:16s} {t['state']:8s} {','.join(t['scopes']):28s} "
              f"{'models=' + ','.join(t['models']) if t['models'] else 'all models':20s} "
              f"created {t['created_at']:%Y-%m-%d %H:%M}"
              f"{'  expires ' + format(t['expires_at'], '%Y-%m-%d %H:%M') if t['expires_at'] else ''}  {t['label']}")
    return 0


def _cmd_token_revoke(args) -> int:
    from atelier.serve import audit, auth

    db = _database(args)
    if not auth.revoke_token(db, args.key_id):
        print(f"atelier serve token revoke: no active token with key id {args.key_id!r}", file=sys.stderr)
        return 2
    audit.record(db, "token.revoke", actor="cli", target=args.key_id[:16])
    print(f"revoked {args.key_id}; its sessions are closed")
    return 0


def _cmd_audit_verify(args) -> int:
    from atelier.serve import audit

    verdict = audit.verify(_database(args))
    if not verdict.ok:
        print(f"atelier serve audit verify: the audit trail is broken at row {verdict.row_id}: {verdict.problem}",
              file=sys.stderr)
        return 1
    print(f"the audit trail verifies: {verdict.rows} rows, each chained to the one before")
    return 0


def _cmd_audit_list(args) -> int:
    from atelier.serve import audit

    for e in reversed(audit.recent(_database(args), args.n)):
        print(f"{e['id']:6d} {e['at'][:19]} {e['actor']:16s} {e['action']:16s} {e['target']:34s} "
              f"{e['detail'] if e['detail'] else ''}")
    return 0


def _cmd_worker(args) -> int:
    from atelier.serve import job_kinds  # noqa: F401 - registers what the workers run
    from atelier.serve.catalog import Catalog
    from atelier.serve.jobs import JobQueue

    if not args.db:
        print("atelier serve worker: --db is required (the studio's database, e.g. postgresql://host/atelier)",
              file=sys.stderr)
        return 2
    _set_threads(args.threads)
    settings = _settings(args)
    catalog = Catalog.from_folders(list(args.models or []), settings.device, checkpoints=True,
                                   key=settings.model_key(), trusted=settings.trusted_keys())
    queue = JobQueue(_database(args), catalog, settings)
    print(f"worker {queue.worker_name}: {settings.workers} threads, {len(catalog)} models, "
          f"database {queue.db.describe()}; Ctrl-C stops it (running jobs are queued again)", flush=True)
    queue.run_forever(max(1, settings.workers))
    return 0


def _cmd_ratings_import(args) -> int:
    from atelier.metrics.ratings import RatingStore
    from atelier.serve.ratings import import_jsonl

    ratings = RatingStore(args.file).load()
    added = import_jsonl(_database(args), ratings)
    print(f"imported {added} of {len(ratings)} ratings from {args.file} ({len(ratings) - added} already present)")
    return 0


def _cmd_ratings_export(args) -> int:
    from atelier.io import atomic_open
    from atelier.serve.ratings import export_jsonl

    n = 0
    with atomic_open(args.out) as f:
        for line in export_jsonl(_database(args)):
            f.write(line.encode())
            n += 1
    print(f"wrote {n} ratings to {args.out}")
    return 0


def add_serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="the studio: HTTP API and web page over trained models",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Serve the models found under --models (run directories and saved models, any "
                                   "family, searched recursively) on an HTTP API with a web page. Every route but "
                                   "/healthz and the page needs a token; the first start prints an admin token.")
    s.add_argument("--models", nargs="+", default=None, help=f"folders of models (default: ./{DEMO_DIR})")
    s.add_argument("--checkpoints", action="store_true", default=None,
                   help="also serve every checkpoint of each run, as RUN@CHECKPOINT (to rate a run against itself)")
    s.add_argument("--key-file", default=None, help="the key of encrypted models (model.atlenc): a key file")
    s.add_argument("--key-env", default=None, help="... or the name of an environment variable holding it")
    s.add_argument("--require-signed", action="store_true", default=None,
                   help="serve only models whose directory is signed by a --trusted key (others are refused, and why "
                        "is printed and logged)")
    s.add_argument("--trusted", nargs="+", default=None, help="trusted public keys (atelier protect keygen --signing)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    db_help = "database URL: a SQLite file path or sqlite:///..., or postgresql://... (default: $ATELIER_HOME/serve/)"
    s.add_argument("--db", default=None, help=db_help)
    s.add_argument("--workers", type=int, default=None, help="job worker threads in the server process (default 1)")
    s.add_argument("--max-batch", type=int, default=None, help="dynamic batching: images per forward pass")
    s.add_argument("--max-wait-ms", type=float, default=None, help="dynamic batching: how long a request waits")
    s.add_argument("--max-pending", type=int, default=None,
                   help="images waiting per model before quick requests get 429 (default 256)")
    s.add_argument("--failed-logins", default=None, metavar="RATE",
                   help="failed logins allowed per client address, then 429 until the window frees (default "
                        "10/minute; '' = no limit)")
    s.add_argument("--user-rate", default=None, metavar="RATE",
                   help="requests per user, e.g. 600/minute (default: no limit)")
    s.add_argument("--generate-rate", default=None, metavar="RATE",
                   help="images per user from quick generation (generate, interpolate, traverse), e.g. 20000/hour "
                        "(the default; '' = no limit)")
    s.add_argument("--device", default=None)
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores but one)")
    s.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    s.set_defaults(func=_cmd_serve)
    ssub = s.add_subparsers(dest="serve_command", required=False, metavar="{token,worker,ratings,audit}")

    t = ssub.add_parser("token", help="create, list or revoke access tokens")
    tsub = t.add_subparsers(dest="token_command", required=True)
    c = tsub.add_parser("create", help="a new token (printed once)")
    c.add_argument("name", help="the principal (user or service) it belongs to")
    c.add_argument("--scopes", default="read,generate", help="comma-separated: read,generate,stylize,rate,admin")
    c.add_argument("--models", default=None, help="comma-separated model names it is limited to (default: all)")
    c.add_argument("--expires-days", type=float, default=None)
    c.add_argument("--label", default=None)
    c.add_argument("--db", default=None, help=db_help)
    c.set_defaults(func=_cmd_token_create)
    ls = tsub.add_parser("list", help="every token (key id, owner, scopes, state; never the secret)")
    ls.add_argument("--db", default=None, help=db_help)
    ls.set_defaults(func=_cmd_token_list)
    r = tsub.add_parser("revoke", help="revoke a token by its key id")
    r.add_argument("key_id")
    r.add_argument("--db", default=None, help=db_help)
    r.set_defaults(func=_cmd_token_revoke)

    w = ssub.add_parser("worker", help="run job workers in this process (other machines: share a PostgreSQL --db)")
    w.add_argument("--db", default=None, help=db_help)
    w.add_argument("--models", nargs="+", default=None, help="the same model folders the server serves")
    w.add_argument("--workers", type=int, default=None, help="worker threads (default 1)")
    w.add_argument("--device", default=None)
    w.add_argument("--key-file", default=None, help="the key of encrypted models")
    w.add_argument("--key-env", default=None, help="... or the environment variable holding it")
    w.add_argument("--require-signed", action="store_true", default=None)
    w.add_argument("--trusted", nargs="+", default=None)
    w.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores but one)")
    w.set_defaults(func=_cmd_worker)

    a = ssub.add_parser("audit", help="the audit trail: verify its hash chain, or list the newest events")
    asub = a.add_subparsers(dest="audit_command", required=True)
    av = asub.add_parser("verify", help="find an edited, inserted or deleted row (exit 1 when broken)")
    av.add_argument("--db", default=None, help=db_help)
    av.set_defaults(func=_cmd_audit_verify)
    al = asub.add_parser("list", help="the newest events (addresses and free text appear as salted hashes)")
    al.add_argument("--n", type=int, default=50)
    al.add_argument("--db", default=None, help=db_help)
    al.set_defaults(func=_cmd_audit_list)

    g = ssub.add_parser("ratings", help="import or export human ratings (JSON lines)")
    gsub = g.add_subparsers(dest="ratings_command", required=True)
    i = gsub.add_parser("import", help="import a JSON-lines ratings file (atelier.metrics.ratings.RatingStore)")
    i.add_argument("file")
    i.add_argument("--db", default=None, help=db_help)
    i.set_defaults(func=_cmd_ratings_import)
    e = gsub.add_parser("export", help="every rating as JSON lines")
    e.add_argument("--out", required=True)
    e.add_argument("--db", default=None, help=db_help)
    e.set_defaults(func=_cmd_ratings_export)
