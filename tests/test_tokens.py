"""API tokens: created once, stored hashed, scoped to a project, revocable; on both databases."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from tracker.catalog import Catalog
from tracker.catalog.models import Token
from tracker.catalog.tokens import create_token, list_tokens, revoke_token, verify_token
from tracker.errors import NotFoundError


def test_tokens_are_hashed_scoped_and_revocable(database_url: str) -> None:
    catalog = Catalog(database_url)
    try:
        info, text = create_token(catalog, "ci", "vision")
        _, admin_text = create_token(catalog, "admin")
        assert text.startswith(f"trk_{info.id}_")
        with catalog.read() as s:
            stored = s.scalars(select(Token).where(Token.id == info.id)).one()
        secret = text.split("_", 2)[2]
        assert secret not in stored.secret_sha256
        assert stored.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()

        found = verify_token(catalog, text)
        assert found is not None and found.allows("vision") and not found.allows("nlp")
        assert verify_token(catalog, admin_text).allows("nlp")  # type: ignore[union-attr]
        assert verify_token(catalog, text[:-1] + ("A" if text[-1] != "A" else "B")) is None
        assert verify_token(catalog, "") is None
        assert verify_token(catalog, "trk_0123456789abcdef_" + "x" * 43) is None

        revoke_token(catalog, info.id)
        assert verify_token(catalog, text) is None
        assert [t.revoked_at is not None for t in list_tokens(catalog)] == [True, False]
        with pytest.raises(NotFoundError):
            revoke_token(catalog, "0" * 16)
    finally:
        catalog.close()
