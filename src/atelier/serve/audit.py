"""The audit trail: who did what, in a hash chain that shows any edited, inserted or deleted row.

Each row's hash is ``SHA-256(previous row's hash || canonical JSON of this row's fields)``, the first row's
previous hash being 64 zeros. :func:`verify` walks the table in id order and names the first row where
the chain breaks: a row edited in place (its hash no longer matches its fields), a row inserted or
deleted (its ``prev_hash`` is not the hash of the row before it), or a gap in the ids.

Client addresses and free text are never stored as given: they are HMAC-SHA256 digests under a random
per-database salt (:class:`~atelier.serve.db.StudioSecret`), enough to tell that two events came from
the same address without keeping the address. Appends are serialised (a lock in the process, and on
PostgreSQL a transaction-scoped advisory lock), so concurrent events cannot fork the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from atelier.serve.db import AuditRow, Database, StudioSecret, utcnow

GENESIS = "0" * 64
AUDIT_LOCK = 0x41554454  # "AUDT"
_lock = threading.Lock()


def _salt(db: Database) -> bytes:
    with db.session() as s:
        row = s.get(StudioSecret, "audit_salt")
        if row is None:
            row = StudioSecret(name="audit_salt", value=secrets.token_hex(32))
            s.add(row)
        return bytes.fromhex(row.value)


def blind(db: Database, text: str | None) -> str:
    """The salted digest under which an address or a piece of free text is kept ("" for nothing)."""
    if not text:
        return ""
    return hmac.new(_salt(db), text.encode(), hashlib.sha256).hexdigest()


def _fields(row: AuditRow) -> bytes:
    return json.dumps({"id": row.id, "at": row.at.isoformat(timespec="microseconds"), "actor": row.actor,
                       "action": row.action, "target": row.target, "detail": row.detail, "address": row.address},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _hash(prev: str, row: AuditRow) -> str:
    return hashlib.sha256(prev.encode() + _fields(row)).hexdigest()


def record(db: Database, action: str, *, actor: str = "-", target: str = "", detail: dict[str, Any] | None = None,
           address: str | None = None, free_text: dict[str, str] | None = None) -> int:
    """Append one event; ``free_text`` values (e.g. a token's label) are stored blinded. Returns its id."""
    detail = dict(detail or {})
    for key, value in (free_text or {}).items():
        detail[key] = blind(db, value)
    address_hash = blind(db, address)
    with _lock, db.session() as s:
        if not db.is_sqlite:
            s.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": AUDIT_LOCK})
        last = s.execute(sa.select(AuditRow.id, AuditRow.row_hash).order_by(AuditRow.id.desc()).limit(1)).first()
        prev = last.row_hash if last else GENESIS
        row = AuditRow(id=(last.id + 1) if last else 1, at=utcnow(), actor=actor[:64], action=action[:64],
                       target=target[:200], detail=detail, address=address_hash, prev_hash=prev, row_hash="")
        row.row_hash = _hash(prev, row)
        s.add(row)
        s.flush()
        return row.id


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rows: int
    problem: str = ""
    row_id: int | None = None


def verify(db: Database) -> Verdict:
    """Walk the chain; the first broken link, if any, is named."""
    prev, expected_id, n = GENESIS, 1, 0
    with db.session() as s:
        for row in s.scalars(sa.select(AuditRow).order_by(AuditRow.id)).yield_per(1000):
            n += 1
            if row.id != expected_id:
                return Verdict(False, n, f"rows {expected_id}..{row.id - 1} are missing (deleted)", row.id)
            if row.prev_hash != prev:
                return Verdict(False, n, f"row {row.id} does not follow row {row.id - 1} (a row was inserted, "
                                         "deleted or replaced before it)", row.id)
            if _hash(prev, row) != row.row_hash:
                return Verdict(False, n, f"row {row.id} was edited after it was written", row.id)
            prev, expected_id = row.row_hash, row.id + 1
    return Verdict(True, n)


def recent(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    with db.session() as s:
        rows = s.scalars(sa.select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)).all()
    return [{"id": r.id, "at": r.at.isoformat(), "actor": r.actor, "action": r.action, "target": r.target,
             "detail": r.detail, "address": r.address[:16]} for r in rows]
