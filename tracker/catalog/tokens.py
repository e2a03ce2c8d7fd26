"""API tokens: ``trk_<id>_<secret>``; the catalog keeps the id and the SHA-256 of the secret.

The secret is 32 random bytes, so a plain SHA-256 is enough (no password stretching needed: it
cannot be guessed from its hash), and comparing digests in constant time leaks nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from tracker.catalog.catalog import Catalog
from tracker.catalog.models import Token, utcnow
from tracker.errors import InvalidArgumentError, NotFoundError
from tracker.names import check_name

PREFIX = "trk"
_TOKEN = re.compile(r"^trk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class TokenInfo:
    """What is known about a token without its secret."""

    id: str
    name: str
    project: str | None  # None: every project
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: Token) -> TokenInfo:
        return cls(row.id, row.name, row.project, row.created_at, row.revoked_at)

    def allows(self, project: str) -> bool:
        """Whether this token may write to ``project``."""
        return self.revoked_at is None and (self.project is None or self.project == project)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(catalog: Catalog, name: str, project: str | None = None) -> tuple[TokenInfo, str]:
    """Create a token for ``project`` (None: all); return it and its text, shown only once."""
    check_name(name, "token name")
    if project is not None:
        check_name(project, "project")
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    with catalog.write() as s:
        row = Token(id=token_id, name=name, project=project, secret_sha256=_digest(secret))
        s.add(row)
        s.flush()
        info = TokenInfo.from_row(row)
    return info, f"{PREFIX}_{token_id}_{secret}"


def list_tokens(catalog: Catalog) -> list[TokenInfo]:
    """Every token, revoked ones included, oldest first."""
    with catalog.read() as s:
        rows = s.scalars(select(Token).order_by(Token.created_at, Token.id))
        return [TokenInfo.from_row(r) for r in rows]


def revoke_token(catalog: Catalog, token_id: str) -> TokenInfo:
    """Revoke a token by id (revoking twice keeps the first time)."""
    with catalog.write() as s:
        row = s.get(Token, token_id)
        if row is None:
            raise NotFoundError(f"no token with id {token_id!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return TokenInfo.from_row(row)


def verify_token(catalog: Catalog, text: str) -> TokenInfo | None:
    """The live token ``text`` names, or None if it is malformed, unknown, wrong or revoked."""
    match = _TOKEN.match(text or "")
    if match is None:
        return None
    token_id, secret = match.groups()
    with catalog.read() as s:
        row = s.get(Token, token_id)
    expected = row.secret_sha256 if row is not None else _digest("")
    ok = hmac.compare_digest(expected, _digest(secret))  # same work whether or not the id exists
    if row is None or not ok or row.revoked_at is not None:
        return None
    return TokenInfo.from_row(row)


def check_token_id(token_id: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{16}", token_id or ""):
        raise InvalidArgumentError(f"invalid token id {token_id!r}: expected 16 hex digits")
    return token_id
