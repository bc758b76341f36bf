"""Versioned documents: one row per document, and an append-only table of its numbered versions.

The register's robots and triggers are kept this way. Every change appends a version with the next
number and a content hash; one version is the active one (the document row's `active_version`);
nothing is removed: a deleted document keeps its versions as history, and saving it again continues
the numbering. What a document holds, its other states and its audit stay with each store.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Generic, Protocol, TypeVar, cast

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from b24robots.errors import DeclarationError

ACTIVE, DELETED = "active", "deleted"


def content_hash(content: object) -> str:
    """SHA-256 of `content` as JSON with sorted keys, non-ASCII kept: equal content, equal hash.
    Stored hashes are compared with new ones, so this encoding must not change."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def require_author(author: str) -> None:
    if not author:
        raise DeclarationError("a version needs an author")


class Document(Protocol):
    id: int
    active_version: int  # 0 while the document has no version
    state: str


class Version(Protocol):
    id: int
    number: int
    content_hash: str


D = TypeVar("D", bound=Document)
V = TypeVar("V", bound=Version)


def _column(table: type[Any], name: str) -> InstrumentedAttribute[Any]:
    return cast(InstrumentedAttribute[Any], getattr(table, name))


def unchanged(document: Document | None, active: V | None, digest: str) -> V | None:
    """`active` when a save of content hashed `digest` appends nothing: the document is there, not
    deleted, and its active version holds that content already; None when the save appends."""
    if document is None or document.state == DELETED or active is None or active.content_hash != digest:
        return None
    return active


class Versioned(Generic[D, V]):
    """The queries over one kind of document: `documents` rows, and `versions` rows whose `owner`
    column holds their document's id."""

    def __init__(self, documents: type[D], versions: type[V], owner: InstrumentedAttribute[int]) -> None:
        self.documents, self.versions, self.owner = documents, versions, owner
        self._doc_id = _column(documents, "id")
        self._doc_active = _column(documents, "active_version")
        self._doc_state = _column(documents, "state")
        self._number = _column(versions, "number")

    def find(self, s: Session, where: ColumnElement[bool], *, deleted: bool = False) -> D | None:
        """The document matching `where`; None when there is none, or it is deleted and not `deleted`."""
        document = s.scalar(select(self.documents).where(where))
        if document is None or (document.state == DELETED and not deleted):
            return None
        return document

    def version(self, s: Session, document_id: int, number: int) -> V | None:
        return s.scalar(select(self.versions).where(self.owner == document_id, self._number == number))

    def active(self, s: Session, document: D) -> V | None:
        """The document's active version (None while it has none)."""
        return self.version(s, document.id, document.active_version)

    def append(self, s: Session, document: D, version: V, *, activate: bool = True) -> V:
        """Add `version` to `document` with the next number after every version it ever had (a deleted
        document's too). It becomes the active one when `activate`, or when the document has none yet."""
        latest = s.scalar(select(func.max(self._number)).where(self.owner == document.id))
        setattr(version, self.owner.key, document.id)
        version.number = (latest or 0) + 1
        s.add(version)
        if activate or document.active_version == 0:
            document.active_version = version.number
        return version

    def history(self, s: Session, document_id: int) -> list[V]:
        """Every version of the document, oldest first."""
        query = select(self.versions).where(self.owner == document_id).order_by(self._number)
        return list(s.scalars(query).all())

    def count(self, s: Session, document_id: int) -> int:
        return int(s.scalar(select(func.count()).where(self.owner == document_id)) or 0)

    def counts(self, s: Session) -> dict[int, int]:
        """document id -> how many versions it has, for every document with any."""
        rows = s.execute(select(self.owner, func.count()).group_by(self.owner)).all()
        return {document_id: int(n) for document_id, n in rows}

    def live(self, *where: ColumnElement[bool]) -> Select[V]:
        """The active version of every document in state ACTIVE (and matching `where`)."""
        return (
            select(self.versions)
            .join(self.documents, self.owner == self._doc_id)
            .where(self._number == self._doc_active, self._doc_state == ACTIVE, *where)
        )
