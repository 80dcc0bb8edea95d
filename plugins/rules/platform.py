"""Rules about the Genesys Cloud platform side: fragmentation, integration, auth, permissions.

Codes: ``platform.session_fragmentation`` (seed 001), ``platform.integration_inactive``
(seed 003), ``platform.auth_failed``, ``platform.permission_missing``. Inputs: the
``genesys.*`` evidence items named in FINDINGS.md, and check rows with ``genesys_auth``
(a check that needed the agent's login and found it refused or expired).
"""

from __future__ import annotations

from agentd import hookimpl
from agentd.correlation import Findings
from agentd.model import CheckResult, Severity, Verdict

from .base import items, number, ok_evidence, ref_check, ref_evidence, verdict

LOGIN_EXPIRED = "login_expired"  # AuthError.grant of a login that ran out (plugins/genesys/tokens.py)


@hookimpl
def agentd_correlate(findings: Findings) -> list[Verdict]:
    found = [
        session_fragmentation(findings),
        integration_inactive(findings),
        auth_failed(findings),
        permission_missing(findings),
    ]
    return [v for v in found if v is not None]


def session_fragmentation(findings: Findings) -> Verdict | None:
    for item in ok_evidence(findings, "genesys.session_fragmentation"):
        sessions = number(item.data.get("sessions"))
        if sessions is None or sessions <= 1:
            continue
        reconnects = number(item.data.get("reconnects"))
        stitched = number(item.data.get("stitched_talk_s"))
        per = item.data.get("per_session_talk_s")
        per_text = ""
        if isinstance(per, (list, tuple)) and per:
            per_text = " (talk time per session: " + ", ".join(f"{number(p) or 0:.0f} s" for p in per[:8]) + ")"
        total = f"; stitched together they make {stitched:.0f} s of talk" if stitched is not None else ""
        again = f" after {reconnects:.0f} reconnect(s)" if reconnects else ""
        return verdict(
            "platform.session_fragmentation",
            Severity.WARNING,
            0.85,
            f"One interaction was split into {sessions:.0f} sessions{again}{per_text}{total}: talk time and "
            "after-call work in Performance views are wrong for it.",
            "Make the softphone or integration send one stable X-Genesys-Client-Id header for the whole login "
            "session, and fix what makes it reconnect (see any signaling finding).",
            [ref_evidence(item)],
        )
    return None


def integration_inactive(findings: Findings) -> Verdict | None:
    for item in ok_evidence(findings, "genesys.integration"):
        state = item.data.get("reportedState")
        code = state.get("code") if isinstance(state, dict) else None
        if not isinstance(code, str) or code.upper() == "ACTIVE":
            continue
        name = item.data.get("name") or item.data.get("integrationId") or item.id
        return verdict(
            "platform.integration_inactive",
            Severity.CRITICAL,
            0.95,
            f"The integration {name!s} is {code}, not ACTIVE: Genesys Cloud will not open its connections.",
            "An admin opens Admin > Integrations, fixes the integration's configuration or credentials and sets it "
            "active; then re-run the diagnosis.",
            [ref_evidence(item)],
        )
    return None


def login_rows(findings: Findings) -> list[tuple[CheckResult, dict]]:
    """Check rows that could not run because the agent's login was refused or ran out:
    a ``genesys_auth`` dict in a check's details or in one of its ``targets`` rows
    (plugins/FINDINGS.md)."""
    found = []
    for check in findings.report.checks:
        rows = [check.details, *items(check.details.get("targets"))]
        found += [(check, row["genesys_auth"]) for row in rows if isinstance(row.get("genesys_auth"), dict)]
    return found


def auth_failed(findings: Findings) -> Verdict | None:
    refused = list(findings.evidence(kind="genesys.auth"))
    rows = login_rows(findings)
    if not refused and not rows:
        return None
    ids = [str(i.data.get("correlationId")) for i in refused if i.data.get("correlationId")]
    support = f" (correlation id {', '.join(ids)} for Genesys support)" if ids else ""
    next_step = (
        "Check [genesys] client_id and client_secret and that the region matches the org "
        "(an OAuth client of one region is unknown in another); a deleted or rotated client needs new values."
    )
    grants = {i.data.get("grant") for i in refused} | {r.get("grant") for _, r in rows}
    expired = [r for _, r in rows if r.get("grant") == LOGIN_EXPIRED] + [i.data for i in refused if i.data.get("grant") == LOGIN_EXPIRED]
    summary = f"Genesys Cloud refused agentd's credentials (401){support}: no server evidence could be read."
    if expired:
        said = next((str(r.get("message")) for r in expired if r.get("message")), "the agent's Genesys login has expired")
        summary = f"The agent's Genesys Cloud login is over ({said.rstrip('.')}): what needs it was not tested."
        next_step = (
            "Run `agentd login` as the agent (once per login lifetime when the OAuth client gives no refresh token; "
            "a Code Authorization client with [genesys] login_client_secret renews itself)."
        )
    elif grants & {"refresh_token", "authorization_code"}:
        # the agent's own login (agentd login) was refused: revoked, expired or logged out
        next_step = (
            "Run `agentd login` again as the agent: the stored login was revoked or has expired "
            "(a password change or an admin revoking the agent's sessions does that)."
        )
    checks = list(dict.fromkeys(ref_check(c) for c, _ in rows))
    return verdict(
        "platform.auth_failed",
        Severity.CRITICAL,
        0.95,
        summary,
        next_step,
        [ref_evidence(i) for i in refused] + checks,
    )


def permission_missing(findings: Findings) -> Verdict | None:
    denied = list(findings.evidence(kind="genesys.permission"))
    if not denied:
        return None
    names = sorted({str(i.data["permission"]) for i in denied if i.data.get("permission")})
    what = ", ".join(names) if names else "a permission the error did not name"
    return verdict(
        "platform.permission_missing",
        Severity.WARNING,
        0.95 if names else 0.7,
        f"Genesys Cloud answered 403 Forbidden: the OAuth client lacks {what}; that evidence is missing from this report.",
        f"An admin adds {what} to the role of agentd's OAuth client (Admin > Roles / Permissions), then re-run.",
        [ref_evidence(i) for i in denied],
    )
