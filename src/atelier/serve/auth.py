"""Principals, tokens, scopes and web sessions.

A token is ``atl_<key id>_<secret>``: the key id (48 random bits, shown in listings) finds the row, the
secret (256 random bits) is checked against its stored SHA-256 digest with :func:`hmac.compare_digest`.
Tokens are shown once, at creation, and can expire or be revoked. A browser logs in with a token and
gets a session cookie (HttpOnly, SameSite=Strict) plus a CSRF token it must echo in ``X-CSRF-Token``
on every state-changing request; API clients send ``Authorization: Bearer <token>`` instead.

Hand-written rather than taken from a library: FastAPI's ``security`` helpers only parse the header,
and what is left (the token table, scopes, per-model limits, sessions) is specific to the studio.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

import sqlalchemy as sa

from atelier.serve.db import Database, Principal, Token, WebSession, utcnow
from atelier.serve.settings import SCOPES

_TOKEN = re.compile(r"^atl_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_DUMMY = hashlib.sha256(b"no such token").hexdigest()
#: Seconds an authenticated token is remembered in this process. A revocation made in this process
#: applies at once; one made by another process (``atelier serve token revoke``) within this time.
CACHE_SECONDS = 5.0
_cache: dict[str, tuple[Identity, float, str]] = {}  # digest of the whole token -> identity, until, key id
_cache_lock = threading.Lock()


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """Who is asking: the principal, the token used, what it may do and (optionally) on which models."""

    principal_id: int
    name: str
    token_id: int
    scopes: frozenset[str]
    models: frozenset[str] | None  # None: every model
    via_session: bool = False

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True)
class NewToken:
    token: str  # shown once
    key_id: str
    principal: str
    scopes: tuple[str, ...]
    models: tuple[str, ...] | None
    expires_at: datetime | None


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
    return scopes


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"a principal's name is 1-64 letters, digits or _.@- (starting with a letter or digit), "
                         f"got {name!r}")
    return name


def create_token(db: Database, principal: str, scopes: Iterable[str], *, models: Iterable[str] | None = None,
                 expires_in: timedelta | None = None, label: str = "") -> NewToken:
    """A new token for ``principal`` (created if new). The returned ``token`` is the only copy."""
    principal = check_name(principal)
    scopes = check_scopes(scopes)
    models = None if models is None else tuple(dict.fromkeys(models))
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    expires = utcnow() + expires_in if expires_in is not None else None
    with db.session() as s:
        row = s.scalar(sa.select(Principal).where(Principal.name == principal))
        if row is None:
            row = Principal(name=principal)
            s.add(row)
            s.flush()
        s.add(Token(key_id=key_id, secret_hash=digest(secret), principal_id=row.id, scopes=list(scopes),
                    models=None if models is None else list(models), label=label[:200], expires_at=expires))
    return NewToken(f"atl_{key_id}_{secret}", key_id, principal, scopes, models, expires)


def list_tokens(db: Database) -> list[dict]:
    with db.session() as s:
        rows = s.execute(sa.select(Token, Principal.name).join(Principal).order_by(Token.id)).all()
        now = utcnow()
        return [{"key_id": t.key_id, "principal": name, "scopes": t.scopes, "models": t.models, "label": t.label,
                 "created_at": t.created_at, "expires_at": t.expires_at, "last_used_at": t.last_used_at,
                 "state": "revoked" if t.revoked_at else ("expired" if t.expires_at and t.expires_at <= now
                                                         else "active")} for t, name in rows]


def revoke_token(db: Database, key_id: str) -> bool:
    """Revoke by key id (or a whole token); its sessions end too. False when no such active token."""
    m = _TOKEN.match(key_id)
    key_id = m.group(1) if m else key_id
    with db.session() as s:
        token = s.scalar(sa.select(Token).where(Token.key_id == key_id))
        if token is None or token.revoked_at is not None:
            return False
        token.revoked_at = utcnow()
        s.execute(sa.delete(WebSession).where(WebSession.token_id == token.id))
    forget(key_id)
    return True


def has_tokens(db: Database) -> bool:
    with db.session() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(Token)) > 0


def _identity(token: Token, name: str, via_session: bool = False) -> Identity:
    return Identity(token.principal_id, name, token.id, frozenset(token.scopes),
                    None if token.models is None else frozenset(token.models), via_session)


def cached_identity(presented: str) -> Identity | None:
    """A token authenticated in the last :data:`CACHE_SECONDS` (no database round trip), else None."""
    key = digest(presented)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        if hit is not None:
            del _cache[key]
    return None


def forget(key_id: str | None = None) -> None:
    """Drop cached identities (of one key id, or all)."""
    with _cache_lock:
        for k in [k for k, v in _cache.items() if key_id is None or v[2] == key_id]:
            del _cache[k]


def authenticate(db: Database, presented: str) -> Identity | None:
    """The identity of a presented token, or None (malformed, unknown, wrong secret, revoked, expired).
    Remembered for :data:`CACHE_SECONDS` (never past the token's expiry): see :func:`cached_identity`."""
    m = _TOKEN.match(presented or "")
    if not m:
        return None
    hit = cached_identity(presented)
    if hit is not None:
        return hit
    key_id, secret = m.groups()
    with db.session() as s:
        row = s.execute(sa.select(Token, Principal.name).join(Principal).where(Token.key_id == key_id)).first()
        # compare even when the key id is unknown, so timing does not tell which key ids exist
        ok = hmac.compare_digest(digest(secret), row[0].secret_hash if row else _DUMMY) and row is not None
        if not ok:
            return None
        token, name = row
        now = utcnow()
        if token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
            return None
        if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
            token.last_used_at = now  # at most one write a minute per token
        who = _identity(token, name)
        ttl = CACHE_SECONDS if token.expires_at is None else min(CACHE_SECONDS, (token.expires_at - now).total_seconds())
        with _cache_lock:
            if len(_cache) > 10_000:
                _cache.clear()
            _cache[digest(presented)] = (who, time.monotonic() + ttl, key_id)
        return who


def open_session(db: Database, identity: Identity, hours: float) -> tuple[str, str]:
    """(session id for the cookie, CSRF token for the page). Only digests are stored."""
    session_id = secrets.token_urlsafe(32)
    csrf = csrf_for(session_id)
    with db.session() as s:
        s.add(WebSession(id_hash=digest(session_id), token_id=identity.token_id, csrf_hash=digest(csrf),
                         expires_at=utcnow() + timedelta(hours=hours)))
    return session_id, csrf


def csrf_for(session_id: str) -> str:
    """The CSRF token of a session: derived from its secret id, so the page can ask for it again."""
    return hmac.new(session_id.encode(), b"atelier-csrf", hashlib.sha256).hexdigest()


def session_identity(db: Database, session_id: str) -> Identity | None:
    if not session_id or len(session_id) > 100:
        return None
    with db.session() as s:
        row = s.execute(sa.select(WebSession, Token, Principal.name).join(Token, WebSession.token_id == Token.id)
                        .join(Principal, Token.principal_id == Principal.id)
                        .where(WebSession.id_hash == digest(session_id))).first()
        if row is None:
            return None
        session, token, name = row
        now = utcnow()
        if session.expires_at <= now or token.revoked_at is not None or \
                (token.expires_at is not None and token.expires_at <= now):
            s.delete(session)
            return None
        return _identity(token, name, via_session=True)


def check_csrf(session_id: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(csrf_for(session_id), presented)


def close_session(db: Database, session_id: str) -> None:
    with db.session() as s:
        s.execute(sa.delete(WebSession).where(WebSession.id_hash == digest(session_id)))
