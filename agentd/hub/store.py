"""What the hub keeps, and the questions it asks of it (one place for every query)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from agentd.hub import security
from agentd.hub.db import enroll_keys, enrollments, pcs, reports, run_events, runs, sessions, users
from agentd.model import Report, parse_time

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
SESSION_TTL_S = 12 * 3600
REENROLL_WINDOW_S = 3600.0
"""How long ``agentd hub pc allow-reenroll`` lets a PC enroll again without its token."""


class HubInputError(ValueError):
    """Input the hub refuses: the message is the one line the client gets (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class PC:
    install_id: str
    token_id: str
    hostname: str
    revoked: float | None


def now() -> float:
    return time.time()


@dataclass(frozen=True)
class Enrolled:
    """An enrollment the hub accepted: the new token (shown once) and how it came."""

    token: str
    outcome: str  # enrolled | re-enrolled
    note: str


_TAKEN = ("PC {install_id} is enrolled already and its token is live: enrolling it again needs that token "
          "(or an administrator's `agentd hub pc allow-reenroll {install_id}`)")


def no_nul(field_name: str, value: str | None) -> None:
    """PostgreSQL cannot store a NUL character in text: refuse it as bad input (a 4xx),
    the same on every database."""
    if value is not None and "\x00" in value:
        raise HubInputError(f"{field_name} must not contain a NUL character", 422)


class Store:
    def __init__(self, engine: AsyncEngine, *, hash_workers: int = 2) -> None:
        self.engine = engine
        self.verified = security.VerifiedCache()
        self.hashing = security.Hashing(hash_workers)
        self._lookups: list[tuple[str, asyncio.Future[Any]]] = []
        self._looker: asyncio.Task[None] | None = None
        self._upgrades = asyncio.Semaphore(4)  # old tokens' argon2 checks writing their fast check at once

    # -- enrollment keys --------------------------------------------------------------

    async def create_enroll_key(self, note: str = "") -> security.IssuedSecret:
        issued = security.issue(security.ENROLL_KEY_KIND)
        async with self.engine.begin() as conn:
            await conn.execute(enroll_keys.insert().values(id=issued.id, key_hash=issued.hash, note=note[:200], created=now()))
        return issued

    async def list_enroll_keys(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(enroll_keys).order_by(enroll_keys.c.created))).mappings().all()
        return [{k: v for k, v in r.items() if k != "key_hash"} for r in rows]

    async def revoke_enroll_key(self, key_id: str) -> bool:
        async with self.engine.begin() as conn:
            done = await conn.execute(
                enroll_keys.update().where(enroll_keys.c.id == key_id, enroll_keys.c.revoked.is_(None)).values(revoked=now())
            )
        return done.rowcount > 0

    # -- PCs ----------------------------------------------------------------------------

    async def enroll(self, key_text: str, install_id: str, hostname: str, user: str | None, *,
                     current_token: str | None = None, client: str | None = None) -> Enrolled:
        """Trade a fleet key for this PC's own install token (shown once).

        An install id that already has a live (unrevoked) token is not handed a new one
        for the fleet key alone (every PC has the key, and install ids are in reports):
        the request must carry that token (``current_token``: a rotation), or an
        administrator must have allowed it (``allow_reenroll``). Refusals are recorded
        too, so the PC's page shows an attempt to take it over."""
        parts = security.split(security.ENROLL_KEY_KIND, key_text)
        if parts is None:
            raise HubInputError("not an enrollment key", 401)
        if not SAFE_ID.match(install_id or ""):
            raise HubInputError("install_id must be 1-100 letters, digits or ._:-")
        no_nul("hostname", hostname)
        no_nul("user", user)
        key_id, secret = parts
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(enroll_keys).where(enroll_keys.c.id == key_id))).mappings().first()
            pc = (await conn.execute(sa.select(pcs.c.revoked, pcs.c.token_id, pcs.c.token_hash, pcs.c.reenroll_until)
                                     .where(pcs.c.install_id == install_id))).first()
        if row is None or row["revoked"] is not None or not await self.hashing.verify_secret(row["key_hash"], secret):
            raise HubInputError("enrollment key unknown or revoked", 401)
        if pc is not None and pc.revoked is not None:
            raise HubInputError("this PC was revoked on the hub; an administrator must remove it first", 403)
        how = "enrolled"
        if pc is not None:
            if current_token and await self._token_of(pc.token_id, pc.token_hash, current_token):
                how = "re-enrolled with its current token"
            elif pc.reenroll_until is not None and pc.reenroll_until > now():
                how = "re-enrolled (allowed by an administrator)"
            else:
                await self._refused(install_id, key_id, client, "a live token exists and was not presented")
                raise HubInputError(_TAKEN.format(install_id=install_id), 409)
        token, check = await self.hashing.issue(security.INSTALL_TOKEN_KIND)
        values = dict(token_id=token.id, token_hash=token.hash, token_check=check, enroll_key_id=key_id, hostname=hostname[:255],
                      agent_user=(user or None) and user[:255], enrolled=now(), reenroll_until=None)
        try:
            async with self.engine.begin() as conn:
                if pc is None:
                    await conn.execute(pcs.insert().values(install_id=install_id, **values))
                else:  # only over the token that was checked: of two re-enrollments at once, one wins
                    done = await conn.execute(pcs.update().where(pcs.c.install_id == install_id, pcs.c.token_id == pc.token_id,
                                                                 pcs.c.revoked.is_(None)).values(**values))
                    if done.rowcount != 1:
                        raise IntegrityError("re-enrollment raced", None, Exception("raced"))
                await conn.execute(enroll_keys.update().where(enroll_keys.c.id == key_id).values(uses=enroll_keys.c.uses + 1))
                await conn.execute(enrollments.insert().values(install_id=install_id, at=now(), outcome="enrolled" if pc is None else "re-enrolled",
                                                               client=(client or "")[:64] or None, enroll_key_id=key_id, note=how))
        except IntegrityError:  # another enrollment of this install id got there first: it keeps the only token
            await self._refused(install_id, key_id, client, "another enrollment of this PC was accepted at the same moment")
            raise HubInputError(_TAKEN.format(install_id=install_id), 409) from None
        return Enrolled(token.text, "enrolled" if pc is None else "re-enrolled", how)

    async def _token_of(self, token_id: str, token_hash: str, token_text: str) -> bool:
        parts = security.split(security.INSTALL_TOKEN_KIND, token_text)
        return parts is not None and parts[0] == token_id and await self.hashing.verify_secret(token_hash, parts[1])

    async def connected_many(self, node: str, found: list[tuple[str, str | None]]) -> None:
        """Many PCs' sockets opened on this process (install id, public address): one
        transaction (a storm of reconnects is one commit per batch, not one each)."""
        values = [{"b_id": install_id, "b_ip": ip} for install_id, ip in found]
        async with self.engine.begin() as conn:
            await conn.execute(pcs.update().where(pcs.c.install_id == sa.bindparam("b_id"))
                               .values(connected_node=node, last_seen=now(), public_ip=sa.func.coalesce(sa.bindparam("b_ip"), pcs.c.public_ip)),
                               values)

    async def _refused(self, install_id: str, key_id: str, client: str | None, why: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(enrollments.insert().values(install_id=install_id, at=now(), outcome="refused",
                                                           client=(client or "")[:64] or None, enroll_key_id=key_id, note=why[:300]))

    async def allow_reenroll(self, install_id: str, window_s: float = REENROLL_WINDOW_S) -> bool:
        """Let this PC enroll again with the fleet key alone, once, within ``window_s``
        (it lost its token); False when there is no such unrevoked PC."""
        async with self.engine.begin() as conn:
            done = await conn.execute(pcs.update().where(pcs.c.install_id == install_id, pcs.c.revoked.is_(None))
                                      .values(reenroll_until=now() + window_s))
            if done.rowcount:
                await conn.execute(enrollments.insert().values(install_id=install_id, at=now(), outcome="allowed",
                                                               note=f"an administrator allowed re-enrollment for {window_s / 60:g} min"))
        return done.rowcount > 0

    async def enrollment_events(self, install_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The PC's enrollments, re-enrollments and refused attempts, newest first."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(enrollments).where(enrollments.c.install_id == install_id)
                                       .order_by(enrollments.c.at.desc(), enrollments.c.id.desc()).limit(limit))).mappings().all()
        return [dict(r) for r in rows]

    async def pc_for_token(self, token_text: str) -> PC | None:
        parts = security.split(security.INSTALL_TOKEN_KIND, token_text)
        if parts is None:
            return None
        token_id, secret = parts
        row = await self._token_row(token_id)
        if row is None or row["revoked"] is not None:
            return None
        mark = security.fingerprint(f"{row['token_hash']}|{token_text}")
        if not self.verified.has(mark):
            if row["token_check"]:
                if not security.same(security.token_check(secret), row["token_check"]):
                    return None
            else:  # a token issued before the fast check: argon2 once, then the check is kept
                if not await self.hashing.verify_secret(row["token_hash"], secret):
                    return None
                async with self._upgrades, self.engine.begin() as conn:
                    await conn.execute(pcs.update().where(pcs.c.token_id == token_id, pcs.c.token_check.is_(None))
                                       .values(token_check=security.token_check(secret)))
            self.verified.add(mark)
        return PC(row["install_id"], row["token_id"], row["hostname"], row["revoked"])

    async def _token_row(self, token_id: str) -> Any:
        """The token's PC row, read fresh (a revocation counts at once). Lookups arriving
        while one query runs go in the next, one ``IN`` query for up to 500: a fleet
        reconnecting after a restart costs a query per batch, not one per PC, and holds
        one pool connection."""
        loop = asyncio.get_running_loop()
        found: asyncio.Future[Any] = loop.create_future()
        self._lookups.append((token_id, found))
        if self._looker is None or self._looker.done() or self._looker.get_loop() is not loop:
            self._looker = loop.create_task(self._look_up())
        return await found

    async def _look_up(self) -> None:
        while self._lookups:
            batch, self._lookups = self._lookups[:500], self._lookups[500:]
            try:
                async with self.engine.connect() as conn:
                    rows = (await conn.execute(sa.select(pcs).where(pcs.c.token_id.in_(sorted({t for t, _ in batch}))))).mappings().all()
            except Exception as exc:
                for _, found in batch:
                    if not found.done():
                        found.set_exception(exc)
                        found.exception()  # retrieved here too: a caller that went away meanwhile is not an error
            else:
                by_id = {row["token_id"]: row for row in rows}
                for token_id, found in batch:
                    if not found.done():
                        found.set_result(by_id.get(token_id))

    async def list_pcs(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(pcs).order_by(pcs.c.hostname, pcs.c.install_id))).mappings().all()
        return [{k: v for k, v in r.items() if k not in ("token_hash", "token_check")} for r in rows]

    async def pc_row(self, install_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(pcs).where(pcs.c.install_id == install_id))).mappings().first()
        return None if row is None else {k: v for k, v in row.items() if k not in ("token_hash", "token_check")}

    async def revoke_pc(self, install_id: str) -> bool:
        async with self.engine.begin() as conn:
            done = await conn.execute(pcs.update().where(pcs.c.install_id == install_id, pcs.c.revoked.is_(None)).values(revoked=now()))
        return done.rowcount > 0

    async def remove_pc(self, install_id: str) -> bool:
        async with self.engine.begin() as conn:
            done = await conn.execute(pcs.delete().where(pcs.c.install_id == install_id))
        return done.rowcount > 0

    async def revoked_ids(self) -> set[str]:
        """Every revoked PC (few): one query for all of a process's sockets."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(pcs.c.install_id).where(pcs.c.revoked.is_not(None)))).all()
        return {r.install_id for r in rows}

    async def present_ids(self, install_ids: Sequence[str]) -> set[str]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(pcs.c.install_id).where(pcs.c.install_id.in_(list(install_ids))))).all()
        return {r.install_id for r in rows}

    async def is_revoked(self, install_id: str) -> bool:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(pcs.c.revoked).where(pcs.c.install_id == install_id))).first()
        return row is None or row.revoked is not None

    async def disconnected(self, install_id: str, node: str) -> None:
        """This process's socket of the PC closed: not connected, unless it is connected
        to another process by now (a PC that moved keeps that process's mark)."""
        async with self.engine.begin() as conn:
            await conn.execute(pcs.update().where(pcs.c.install_id == install_id, pcs.c.connected_node == node)
                               .values(connected_node=None, last_seen=now()))

    async def node_stopped(self, node: str) -> None:
        """This process stops: none of its PCs is connected to it any more."""
        async with self.engine.begin() as conn:
            await conn.execute(pcs.update().where(pcs.c.connected_node == node).values(connected_node=None, last_seen=now()))

    async def present(self, node: str, held: set[str], stale_after_s: float) -> int:
        """One round of presence. The PCs whose sockets this process holds (``held``) are
        seen now; a PC marked connected to this process that it does not hold (its
        disconnect was not recorded) and a PC marked connected to a process that stopped
        marking its own for ``stale_after_s`` (it crashed) are marked not connected.
        Returns how many were cleared."""
        async with self.engine.begin() as conn:
            await conn.execute(pcs.update().where(pcs.c.connected_node == node).values(last_seen=now()))
            marked = {r.install_id for r in (await conn.execute(sa.select(pcs.c.install_id).where(pcs.c.connected_node == node))).all()}
            cleared = 0
            gone = sorted(marked - held)
            for start in range(0, len(gone), 500):
                done = await conn.execute(pcs.update().where(pcs.c.connected_node == node, pcs.c.install_id.in_(gone[start:start + 500]))
                                          .values(connected_node=None))
                cleared += done.rowcount or 0
            done = await conn.execute(pcs.update().where(pcs.c.connected_node.is_not(None), pcs.c.connected_node != node,
                                                         sa.or_(pcs.c.last_seen.is_(None), pcs.c.last_seen < now() - stale_after_s))
                                      .values(connected_node=None))
        return cleared + (done.rowcount or 0)

    async def seen(self, install_id: str, *, public_ip: str | None = None, node: str | None | bool = False) -> None:
        values: dict[str, Any] = {"last_seen": now()}
        if public_ip:
            values["public_ip"] = public_ip
        if node is not False:
            values["connected_node"] = node
        async with self.engine.begin() as conn:
            await conn.execute(pcs.update().where(pcs.c.install_id == install_id).values(**values))

    # -- users and sessions --------------------------------------------------------------

    async def add_user(self, name: str, password: str) -> None:
        if not USER_NAME.match(name):
            raise HubInputError("a user name is 1-100 letters, digits or ._@-")
        if len(password) < 8:
            raise HubInputError("the password must have at least 8 characters")
        try:
            async with self.engine.begin() as conn:
                await conn.execute(users.insert().values(name=name, password_hash=await self.hashing.hash_password(password), created=now()))
        except IntegrityError:
            raise HubInputError(f"user {name!r} exists already") from None

    async def list_users(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(users.c.name, users.c.created).order_by(users.c.name))).mappings().all()
        return [dict(r) for r in rows]

    async def remove_user(self, name: str) -> bool:
        async with self.engine.begin() as conn:
            done = await conn.execute(users.delete().where(users.c.name == name))
            await conn.execute(sessions.delete().where(sessions.c.user_name == name))
        return done.rowcount > 0

    async def remembered_password(self, name: str, password: str) -> bool:
        """A password this process verified lately (no hash runs, nothing is charged)."""
        if not USER_NAME.match(name):
            return False
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(users.c.password_hash).where(users.c.name == name))).first()
        return row is not None and self.verified.has(security.fingerprint(f"{row.password_hash}|{password}"))

    async def check_password(self, name: str, password: str) -> bool:
        """argon2 in the hashing pool, never on the event loop."""
        row = None
        if USER_NAME.match(name) and len(password) <= 1024:  # a name that cannot exist (a NUL in it...) is not looked up
            async with self.engine.connect() as conn:
                row = (await conn.execute(sa.select(users.c.password_hash).where(users.c.name == name))).first()
        if row is None:
            await self.hashing.verify_password(_DUMMY_HASH, password[:1024])  # same cost whether the user exists or not
            return False
        mark = security.fingerprint(f"{row.password_hash}|{password}")
        if self.verified.has(mark):
            return True
        ok = await self.hashing.verify_password(row.password_hash, password)
        if ok:
            self.verified.add(mark)
        return ok

    async def new_session(self, name: str) -> tuple[str, str]:
        """(session id for the cookie, CSRF token)."""
        sid = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        async with self.engine.begin() as conn:
            await conn.execute(sessions.delete().where(sessions.c.expires < now()))
            await conn.execute(sessions.insert().values(id_hash=security.fingerprint(sid), user_name=name, csrf=csrf, expires=now() + SESSION_TTL_S))
        return sid, csrf

    async def session(self, sid: str) -> tuple[str, str] | None:
        """(user name, CSRF token) of a live session."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(sessions.c.user_name, sessions.c.csrf)
                    .select_from(sessions.join(users, users.c.name == sessions.c.user_name))
                    .where(sessions.c.id_hash == security.fingerprint(sid), sessions.c.expires > now())
                )
            ).first()
        return (row.user_name, row.csrf) if row else None

    async def end_session(self, sid: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sessions.delete().where(sessions.c.id_hash == security.fingerprint(sid)))

    # -- reports ---------------------------------------------------------------------------

    async def store_report(self, pc: PC, report: Report, body: str, public_ip: str | None, *, site_label: str | None = None) -> bool:
        """Store once: True when stored now, False when the hub had it already.

        ``site_label``: the site the PC names in its config (``[hub] site``; "" clears it,
        None leaves it as it was: a PC too old to send one)."""
        no_nul("site", site_label)
        row = summarize(report)
        received = now()
        # a report cannot have been made after it arrived: a PC's clock ahead (or a forged
        # "created" in the future) must not make a report the latest for good
        created_ts = min(row.pop("created_ts"), received)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    reports.insert().values(
                        id=report.id, install_id=pc.install_id, created=report.created, created_ts=created_ts,
                        received=received, body=body, public_ip=public_ip, **row,
                    )
                )
                values: dict[str, Any] = {"last_seen": now()}
                if public_ip:
                    values["public_ip"] = public_ip
                if site_label is not None:
                    values["site_label"] = site_label.strip()[:100] or None
                await conn.execute(pcs.update().where(pcs.c.install_id == pc.install_id).values(**values))
                # the PC's latest report is the one it made last (its created time), never the
                # greatest id: an id is chosen by the PC, so a forged "zzzz..." would pin the status
                columns = [pcs.c.last_report_id] + ([pcs.c.last_preshift_id] if report.profile == "preshift" else [])
                for current in columns:
                    made = sa.select(reports.c.created_ts).where(reports.c.id == current).scalar_subquery()
                    newer = sa.or_(current.is_(None), sa.func.coalesce(made, -1.0) <= created_ts)
                    values = {current.name: report.id}
                    if current is pcs.c.last_report_id:  # the PC's name, agent and status as its latest report says
                        values |= {"hostname": report.agent.hostname[:255], "agent_user": report.agent.user,
                                   **status_values(row, report, created_ts, public_ip)}
                    await conn.execute(pcs.update().where(pcs.c.install_id == pc.install_id, newer).values(**values))
        except IntegrityError:
            return False
        return True

    async def set_site_label(self, install_id: str, label: str | None) -> None:
        """The site a PC names in its config (``[hub] site``): "" clears it, None changes nothing."""
        if label is None:
            return
        no_nul("site", label)
        async with self.engine.begin() as conn:
            await conn.execute(pcs.update().where(pcs.c.install_id == install_id).values(site_label=label.strip()[:100] or None))

    async def report_body(self, report_id: str) -> tuple[str, str] | None:
        """(install id, JSON) of one report."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(reports.c.install_id, reports.c.body).where(reports.c.id == report_id))).first()
        return (row.install_id, row.body) if row else None

    async def report_rows(self, install_id: str, limit: int = 200) -> list[dict[str, Any]]:
        cols = [c for c in reports.c if c.name != "body"]
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(sa.select(*cols).where(reports.c.install_id == install_id).order_by(reports.c.created_ts.desc()).limit(limit))
            ).mappings().all()
        return [dict(r) for r in rows]

    async def recent_reports(self, since_ts: float) -> list[dict[str, Any]]:
        """Reports made since ``since_ts`` (oldest first), each with its PC's site label."""
        cols = [c for c in reports.c if c.name != "body"] + [pcs.c.site_label]
        query = (sa.select(*cols).select_from(reports.outerjoin(pcs, pcs.c.install_id == reports.c.install_id))
                 .where(reports.c.created_ts >= since_ts).order_by(reports.c.created_ts))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [dict(r) for r in rows]

    async def fleet(self) -> list[dict[str, Any]]:
        """Every PC with its latest pre-shift report's summary."""
        latest = reports.alias("latest")
        cols = [pcs.c.install_id, pcs.c.hostname, pcs.c.agent_user, pcs.c.last_seen, pcs.c.public_ip, pcs.c.revoked,
                pcs.c.connected_node, latest.c.id.label("report_id"), latest.c.created, latest.c.ready,
                latest.c.top_verdict, latest.c.public_ip.label("report_ip"), latest.c.failed_checks]
        query = sa.select(*cols).select_from(pcs.outerjoin(latest, latest.c.id == pcs.c.last_preshift_id)).order_by(pcs.c.hostname, pcs.c.install_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [dict(r) for r in rows]

    # -- the fleet page at scale (agentd/hub/fleetview.py sorts, filters and pages it) -------------

    async def fleet_rows(self) -> list[dict[str, Any]]:
        """Every PC with the status of its latest report of any profile (``last_report_id``,
        kept on the PC's row at ingest: one table, no join, no report bodies): the slim
        columns the fleet page and API filter and sort on."""
        cols = [pcs.c.install_id, pcs.c.hostname, pcs.c.agent_user, pcs.c.last_seen, pcs.c.public_ip, pcs.c.revoked,
                pcs.c.connected_node, pcs.c.site_label, pcs.c.last_report_id.label("report_id"), pcs.c.status_created.label("created"),
                pcs.c.status_created_ts.label("created_ts"), pcs.c.status_profile.label("profile"), pcs.c.status_ready.label("ready"),
                pcs.c.status_verdict.label("top_verdict"), pcs.c.status_ip.label("report_ip"), pcs.c.status_failed.label("failed_checks"),
                pcs.c.status_sentence.label("sentence")]
        query = sa.select(*cols)
        async with self.engine.connect() as conn:
            result = await conn.execute(query)
            keys = list(result.keys())
            return [dict(zip(keys, row)) for row in result.all()]

    async def preshift_rows(self, install_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The latest pre-shift report (``last_preshift_id``) of a page's PCs."""
        if not install_ids:
            return {}
        query = (sa.select(pcs.c.install_id, reports.c.id, reports.c.created, reports.c.ready, reports.c.top_verdict, reports.c.failed_checks)
                 .select_from(pcs.join(reports, reports.c.id == pcs.c.last_preshift_id)).where(pcs.c.install_id.in_(list(install_ids))))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return {r["install_id"]: dict(r) for r in rows}

    async def install_ids_for_conversation(self, conversation_id: str) -> set[str]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(reports.c.install_id).where(reports.c.conversation_id == conversation_id).distinct())).all()
        return {r.install_id for r in rows}

    async def top_sentences(self, report_ids: Sequence[str]) -> dict[str, str]:
        """The top verdict's sentence of each of a page's reports (read from the bodies:
        a page holds few)."""
        if not report_ids:
            return {}
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(reports.c.id, reports.c.body).where(reports.c.id.in_(list(report_ids))))).all()
        out: dict[str, str] = {}
        for row in rows:
            try:
                verdicts = json.loads(row.body).get("verdicts") or []
                summary = verdicts[0].get("summary") if verdicts and isinstance(verdicts[0], dict) else None
            except (ValueError, AttributeError):
                summary = None
            if isinstance(summary, str):
                out[row.id] = summary[:300]
        return out

    async def search(self, text: str, limit: int = 50) -> list[dict[str, Any]]:
        like = f"%{_escape_like(text)}%"
        cols = [c for c in reports.c if c.name != "body"]
        query = (
            sa.select(*cols)
            .where(sa.or_(reports.c.conversation_id == text, reports.c.hostname.ilike(like, escape="\\"),
                          reports.c.agent_user.ilike(like, escape="\\"), reports.c.id == text, reports.c.install_id == text))
            .order_by(reports.c.created_ts.desc())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [dict(r) for r in rows]

    # -- runs ------------------------------------------------------------------------------

    async def new_run(self, install_id: str, profile: str, user: str) -> str:
        run_id = f"run-{secrets.token_hex(8)}"
        async with self.engine.begin() as conn:
            await conn.execute(runs.insert().values(id=run_id, install_id=install_id, profile=profile, requested_by=user,
                                                    state="requested", created=now(), updated=now()))
        return run_id

    async def pending_runs(self, max_age_s: float) -> list[tuple[str, str, str]]:
        """(run id, install id, profile) of recent runs no process has sent to its PC yet."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(runs.c.id, runs.c.install_id, runs.c.profile)
                                       .where(runs.c.state == "requested", runs.c.created > now() - max_age_s)
                                       .order_by(runs.c.created).limit(1000))).all()
        return [(r.id, r.install_id, r.profile) for r in rows]

    async def run_state(self, run_id: str, state: str, *, report_id: str | None = None, error: str | None = None) -> bool:
        """Move a run on. An ended run stays ended, except that a report arriving after
        all (``done``) wins over a timeout or a lost socket. True when the run changed."""
        values: dict[str, Any] = {"state": state, "updated": now()}
        if report_id:
            values["report_id"] = report_id
        if error:
            values["error"] = error[:500]
        allowed = RUN_ACTIVE + (("timed_out", "offline") if state == "done" else ())
        async with self.engine.begin() as conn:
            done = await conn.execute(runs.update().where(runs.c.id == run_id, runs.c.state.in_(allowed)).values(**values))
        return done.rowcount > 0

    async def add_run_event(self, run_id: str, seq: int, event: dict[str, Any]) -> bool:
        """Keep one progress event of a run; at most ``RUN_EVENT_CAP`` per run (a PC may
        not fill the database), the last kept one then says so. False: not kept."""
        try:
            async with self.engine.begin() as conn:
                kept = (await conn.execute(sa.select(sa.func.count()).select_from(run_events).where(run_events.c.run_id == run_id))).scalar_one()
                if kept > RUN_EVENT_CAP:
                    return False
                if kept == RUN_EVENT_CAP:
                    event = {"event": "capped", "text": f"more progress than the hub keeps for one run ({RUN_EVENT_CAP} events); the report will have it all"}
                await conn.execute(run_events.insert().values(run_id=run_id, seq=seq, at=now(), event=json.dumps(slim_event(event))))
                await conn.execute(runs.update().where(runs.c.id == run_id, runs.c.state.in_(("requested", "sent", "running"))).values(state="running", updated=now()))
        except IntegrityError:
            return False  # the same event again after a reconnect
        return True

    async def run(self, run_id: str, *, after: int = 0) -> dict[str, Any] | None:
        """A run with its progress events (those with ``seq`` above ``after``: a page
        that polls asks only for what it has not shown)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(runs).where(runs.c.id == run_id))).mappings().first()
            if row is None:
                return None
            events = (await conn.execute(sa.select(run_events.c.seq, run_events.c.at, run_events.c.event)
                                         .where(run_events.c.run_id == run_id, run_events.c.seq > after).order_by(run_events.c.seq))).all()
            report_ok = False
            if row["report_id"]:
                report_ok = (await conn.execute(sa.select(reports.c.id).where(reports.c.id == row["report_id"]))).first() is not None
        data = dict(row)
        data["events"] = [{"seq": e.seq, "at": e.at, **json.loads(e.event)} for e in events]
        data["report_stored"] = report_ok
        data["ended"] = row["state"] not in RUN_ACTIVE
        data["progress_cap"] = RUN_EVENT_CAP
        return data

    # -- runs: their end and their list (the helpdesk's "what happened to my check") -------------------

    async def end_runs_of(self, install_id: str, state: str, error: str) -> list[str]:
        """End every active run of a PC (its socket closed: ``offline``). Returns their ids."""
        async with self.engine.begin() as conn:
            ids = [r.id for r in (await conn.execute(sa.select(runs.c.id).where(runs.c.install_id == install_id, runs.c.state.in_(RUN_ACTIVE)))).all()]
            if ids:
                await conn.execute(runs.update().where(runs.c.id.in_(ids), runs.c.state.in_(RUN_ACTIVE)).values(state=state, error=error[:500], updated=now()))
        return ids

    async def expire_runs(self, *, answer_s: float, idle_s: float) -> int:
        """A run the PC never started within ``answer_s`` fails; a running one with no
        event for ``idle_s`` times out. Returns how many ended."""
        t = now()
        async with self.engine.begin() as conn:
            silent = await conn.execute(runs.update().where(runs.c.state.in_(("requested", "sent")), runs.c.updated < t - answer_s)
                                        .values(state="failed", error=f"the PC did not start the check within {answer_s:g} s", updated=t))
            idle = await conn.execute(runs.update().where(runs.c.state == "running", runs.c.updated < t - idle_s)
                                      .values(state="timed_out", error=f"no progress from the PC for {idle_s:g} s", updated=t))
        return silent.rowcount + idle.rowcount

    async def runs_of(self, install_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """A PC's recent runs, newest first: who started each, when, and how it ended."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(runs).where(runs.c.install_id == install_id)
                                       .order_by(runs.c.created.desc()).limit(limit))).mappings().all()
        return [dict(r) | {"ended": r["state"] not in RUN_ACTIVE} for r in rows]


RUN_ACTIVE = ("requested", "sent", "running")
"""A run in one of these states has not ended: done, failed, offline or timed_out end it."""
RUN_EVENT_CAP = 200
"""Progress events kept per run (about 12 checks start, note and finish well within it)."""


def slim_event(event: dict[str, Any]) -> dict[str, Any]:
    """What a progress row shows, bounded: a PC's event never stores more than about 1 KB."""
    def text(value: Any, limit: int) -> str:
        return value[:limit] if isinstance(value, str) else ""

    out: dict[str, Any] = {"event": text(event.get("event"), 20) or "unknown"}
    for key, limit in (("check_id", 100), ("title", 200), ("text", 400), ("summary", 400)):
        if key in event:
            out[key] = text(event[key], limit)
    result = event.get("result")
    if isinstance(result, dict):
        out["result"] = {k: text(result.get(k), 400 if k == "summary" else 100) for k in ("id", "status", "summary")}
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_DUMMY_HASH = security.hash_password("agentd-no-such-user")


def _metric(report: Report, check_id: str, name: str) -> float | None:
    check = report.check(check_id)
    value = check.metrics.get(name) if check else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summarize(report: Report) -> dict[str, Any]:
    """The columns the pages and correlation read, so they need not parse every body."""
    top = report.verdicts[0].code if report.verdicts else None
    return {
        "created_ts": parse_time(report.created).timestamp(),
        "profile": report.profile[:20],
        "ready": report.ready,
        "top_verdict": top,
        "conversation_id": report.conversation_id,
        "hostname": report.agent.hostname[:255],
        "agent_user": (report.agent.user or None) and report.agent.user[:255],
        "failed_checks": ",".join(c.id for c in report.checks if c.status.blocks_readiness)[:500],
        "passed_checks": ",".join(c.id for c in report.checks if str(c.status) == "pass")[:500],
        "loss_pct": _metric(report, "media.path", "loss_pct"),
        "rtt_ms": _metric(report, "media.path", "rtt_ms") or _metric(report, "stun", "rtt_ms"),
        "mos": _metric(report, "media.path", "mos"),
    }


def top_sentence(report: Report) -> str | None:
    """The top verdict's sentence (what the fleet page's "why" column shows)."""
    summary = report.verdicts[0].summary if report.verdicts else None
    return summary[:300] if isinstance(summary, str) else None


def status_values(row: dict[str, Any], report: Report, created_ts: float, public_ip: str | None) -> dict[str, Any]:
    """A report's status as the PC's row keeps it (``pcs.status_*``), from ``summarize``."""
    return {"status_created": report.created[:40], "status_created_ts": created_ts, "status_profile": row["profile"],
            "status_ready": row["ready"], "status_verdict": row["top_verdict"], "status_sentence": top_sentence(report),
            "status_failed": row["failed_checks"], "status_ip": public_ip}


def network_of(address: str | None, v4_prefix: int = 24, v6_prefix: int = 48) -> str | None:
    """The public prefix a PC sits behind (a site), from its public address."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = v4_prefix if ip.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


MAX_DEPTH = 64
"""Deepest nesting of objects and lists a report may have (a real one has about 8)."""


def check_shape(data: Any) -> None:
    """Refuse what would fail later rather than now (a 4xx, not a 500): nesting deeper
    than ``MAX_DEPTH`` (rendering and storing recurse), and NUL characters in any text
    (PostgreSQL cannot store them). Iterative, so the check itself cannot recurse."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise HubInputError(f"field {where or 'body'!r} contains a NUL character", 422)
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth >= MAX_DEPTH:
            raise HubInputError(f"report nested too deeply at {where[:80]!r} (the limit is {MAX_DEPTH} levels)", 422)
        if isinstance(value, dict):
            for key, item in value.items():
                path = f"{where}.{key}" if where else str(key)
                if "\x00" in key:
                    raise HubInputError(f"a key in {where or 'the report'!r} contains a NUL character", 422)
                stack.append((item, path[:200], depth + 1))
        else:
            for n, item in enumerate(value):
                stack.append((item, f"{where}[{n}]"[:200], depth + 1))


def parse_report(body: bytes, *, max_bytes: int) -> tuple[Report, str]:
    """Schema-check an uploaded report; HubInputError names the first problem."""
    if len(body) > max_bytes:
        raise HubInputError(f"report too large: {len(body)} bytes, the limit is {max_bytes}", 413)
    try:
        data = json.loads(body)
    except RecursionError:
        raise HubInputError(f"report nested too deeply (the limit is {MAX_DEPTH} levels)", 422) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HubInputError(f"body is not JSON: {str(exc)[:120]}") from None
    check_shape(data)
    if not isinstance(data, dict):
        raise HubInputError("body must be a JSON object (an agentd.report/1 document)", 422)
    if data.get("schema") != "agentd.report/1":
        raise HubInputError(f"schema must be 'agentd.report/1', got {str(data.get('schema'))[:60]!r}", 422)
    for key, kind in (("id", str), ("created", str), ("agent", dict), ("checks", list), ("verdicts", list), ("evidence", list)):
        if key in data and not isinstance(data[key], kind):
            raise HubInputError(f"field {key!r} must be a {kind.__name__ if kind is not dict else 'object'}", 422)
        if key in ("id", "created", "agent") and key not in data:
            raise HubInputError(f"field {key!r} is missing", 422)
    if not SAFE_ID.match(data["id"]):
        raise HubInputError("field 'id' must be 1-100 letters, digits or ._:-", 422)
    try:
        report = Report.from_dict(data)
        parse_time(report.created)
        for c in report.checks:
            if not isinstance(c.id, str) or not isinstance(c.summary, str) or not isinstance(c.title, str):
                raise TypeError(f"check {str(c.id)[:40]!r}: id, title and summary must be strings")
            if not _number(c.duration_ms) or not all(v is None or _number(v) for v in c.metrics.values()):
                raise TypeError(f"check {c.id[:40]!r}: duration_ms and metrics must be numbers")
        for v in report.verdicts:
            if not isinstance(v.code, str) or not isinstance(v.summary, str) or not _number(v.confidence):
                raise TypeError("verdict code and summary must be strings, confidence a number")
        if not isinstance(report.agent.hostname, str) or not isinstance(report.agent.install_id, str):
            raise TypeError("agent.hostname and agent.install_id must be strings")
    except HubInputError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HubInputError(f"not a valid agentd report: {type(exc).__name__}: {str(exc)[:160]}", 422) from None
    return report, json.dumps(report.to_dict(), ensure_ascii=False)
