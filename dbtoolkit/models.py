"""The sample schema: organisations, their users and the projects users own.

This module is one worked example of a user project. Nothing else in ``dbtoolkit``
imports it; the plugin finds the schema through Alembic and the factories through
configuration.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, String, UniqueConstraint, func, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

PROJECT_STATUSES = ("draft", "active", "archived")


class Base(DeclarativeBase):
    """Declarative base of the sample schema."""


class Organization(Base):
    """A company that users belong to; one of them may be its owner."""

    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Checked at commit, so an organization and its owner can be inserted in either
    # order; use_alter because users.organization_id points the other way.
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey(
            "users.id",
            ondelete="SET NULL",
            name="fk_organizations_owner_id_users",
            deferrable=True,
            initially="DEFERRED",
            use_alter=True,
        )
    )

    # Two foreign keys join organizations and users, so each relationship names its own.
    users: Mapped[list[User]] = relationship(
        back_populates="organization", foreign_keys="User.organization_id"
    )
    owner: Mapped[User | None] = relationship(foreign_keys=[owner_id])


class User(Base):
    """A person with a login; the email is unique across the whole table."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    active: Mapped[bool] = mapped_column(default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL")
    )

    organization: Mapped[Organization | None] = relationship(
        back_populates="users", foreign_keys=[organization_id]
    )
    projects: Mapped[list[Project]] = relationship(
        back_populates="owner", cascade="all, delete-orphan"
    )


class Project(Base):
    """Something a user owns; titles are unique per owner."""

    __tablename__ = "projects"
    __table_args__ = (
        UniqueConstraint("owner_id", "title", name="uq_projects_owner_title"),
        CheckConstraint("status IN ('draft', 'active', 'archived')", name="ck_projects_status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="draft", server_default="draft")
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))

    owner: Mapped[User] = relationship(back_populates="projects")
