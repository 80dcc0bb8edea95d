"""``agentd mute on|off|toggle|status``: the agent's microphone on the active call, the real way.

Finds the agent's own participant on its active call (``GET /api/v2/conversations/calls``,
which needs the agent's own token: ``agentd login``), sends
``PATCH /api/v2/conversations/calls/{conversationId}/participants/{participantId}``
``{"muted": ...}`` (what the Genesys WebRTC SDK does) and confirms the new state from
the notification on ``v2.users.{userId}.conversations.calls`` or, failing that, from
re-reading the call, all within ``--timeout``.

Exit codes: 0 done (or status shown); 1 no active call, not confirmed in time, or the
API refused; 2 usage: several active calls without ``--conversation``, no credentials,
a token without a user.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from agentd import hookimpl
from agentd.commands import Command
from agentd.errors import Conflict, GenesysError, ProbeError, RateLimited, UsageError
from agentd_plugins.genesys.client import GenesysClient, has_credentials, no_credentials_message
from agentd_plugins.notifications.calls import CALLS_TOPIC, AgentCall, active_calls, agent_user_id, own_participant, read_call, set_muted
from agentd_plugins.notifications.monitor import LiveChannel

EXIT_OK, EXIT_NOT_DONE, EXIT_USAGE = 0, 1, 2
RE_READ_EVERY_S = 0.5


@dataclass(frozen=True)
class MuteResult:
    conversation_id: str
    participant_id: str
    muted: bool
    confirmed_by: str  # "notification" | "re-read" | "already"
    elapsed_ms: float
    conflicts: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversationId": self.conversation_id,
            "participantId": self.participant_id,
            "muted": self.muted,
            "confirmed_by": self.confirmed_by,
            "elapsed_ms": self.elapsed_ms,
            "conflicts": self.conflicts,
        }


class MuteFailed(Exception):
    def __init__(self, message: str, code: int = EXIT_NOT_DONE) -> None:
        self.code = code
        super().__init__(message)


def choose_call(calls: list[AgentCall], conversation_id: str | None) -> AgentCall:
    """The call to act on: the one named, else the only connected one (else the only active one)."""
    if conversation_id:
        for call in calls:
            if call.conversation_id == conversation_id:
                return call
        listed = ", ".join(c.conversation_id for c in calls) or "none"
        raise MuteFailed(f"conversation {conversation_id} is not an active call of the agent (active calls: {listed})")
    if not calls:
        raise MuteFailed("no active call: mute applies to a call, and the agent is on none")
    connected = [c for c in calls if c.connected]
    candidates = connected or calls
    if len(candidates) > 1:
        lines = "\n".join(f"  {c.conversation_id}  {c.state:<10} {'muted' if c.muted else 'not muted':<10} {c.address or ''}" for c in candidates)
        raise MuteFailed(f"the agent has {len(candidates)} active calls; name one with --conversation ID:\n{lines}", EXIT_USAGE)
    return candidates[0]


async def change_mute(client: GenesysClient, action: str, *, conversation_id: str | None, timeout_s: float, say=print) -> MuteResult:
    """Mute, unmute or toggle the agent's call and confirm it; raises :class:`MuteFailed`.

    Everything (finding the call, the PATCH with its 429 back-off, the confirmation) ends
    by ``timeout_s``.
    """
    try:
        async with asyncio.timeout(timeout_s + 0.5):  # the steps keep their own share; this is the backstop
            return await _change_mute(client, action, conversation_id=conversation_id, timeout_s=timeout_s, say=say)
    except TimeoutError:
        raise MuteFailed(f"the mute change did not complete within {timeout_s:g} s") from None


async def _change_mute(client: GenesysClient, action: str, *, conversation_id: str | None, timeout_s: float, say) -> MuteResult:
    started = time.monotonic()
    deadline = started + timeout_s

    def left() -> float:
        return deadline - time.monotonic()

    user_id = await agent_user_id(client)
    try:
        calls = await active_calls(client, user_id)
    except GenesysError as exc:
        if exc.status == 400:
            raise MuteFailed(
                f"cannot list the agent's calls ({exc}); mute acts as the agent: run `agentd login` "
                "(client credentials have no user context)",
                EXIT_USAGE,
            ) from None
        raise
    call = choose_call(calls, conversation_id)
    want = (not call.muted) if action == "toggle" else action == "on"
    if call.muted == want and call.connected:
        return MuteResult(call.conversation_id, call.participant_id, want, "already", 0.0, 0)

    confirmed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    connected = asyncio.Event()
    if call.connected:
        connected.set()

    def on_message(data: dict) -> None:
        body = data.get("eventBody")
        if not (data.get("topicName") or "").endswith(".conversations.calls") or not isinstance(body, dict):
            return
        seen = own_participant(body, user_id)
        if seen is None or seen.conversation_id != call.conversation_id:
            return
        if seen.connected:
            connected.set()
        if seen.connected and seen.muted == want and patched and not confirmed.done():
            confirmed.set_result("notification")

    patched = False
    live: LiveChannel | None = None
    try:
        try:
            live = await LiveChannel.open(client, [CALLS_TOPIC.format(user_id)], on_message=on_message, timeout_s=max(0.5, min(5.0, left() / 2)))
        except (GenesysError, ProbeError) as exc:
            say(f"note: no notification channel ({exc}); confirming by re-reading the call")
        conflicts = 0
        while True:
            try:
                patched = True  # from here a matching notification confirms (it may beat the PATCH's answer)
                # the client backs off on 429 (Retry-After) within its own budget; ours is shorter
                async with asyncio.timeout(max(0.05, left())):
                    await set_muted(client, call, want)
                break
            except TimeoutError:
                raise MuteFailed(f"no answer to the mute request within {timeout_s:g} s (rate limited or slow API)") from None
            except Conflict:
                patched = False
                conflicts += 1
                if left() <= 0:
                    raise MuteFailed(f"the call is not connected (HTTP 409) and did not connect within {timeout_s:g} s") from None
                say(f"call {call.conversation_id} is {call.state}, not connected yet (HTTP 409); waiting for it to connect")
                call = await _wait_connected(client, call, user_id, connected, left)
            except RateLimited as exc:
                raise MuteFailed(f"rate limited by Genesys Cloud beyond the retry budget ({exc})") from None
        how = await _confirm(client, call, user_id, want, confirmed, left)
        if how is None:
            raise MuteFailed(f"the mute change was sent but not confirmed within {timeout_s:g} s (no notification, and a re-read still shows the old state)")
        return MuteResult(call.conversation_id, call.participant_id, want, how, round((time.monotonic() - started) * 1000, 1), conflicts)
    finally:
        if live is not None:
            await live.close()


async def _wait_connected(client: GenesysClient, call: AgentCall, user_id: str, connected: asyncio.Event, left) -> AgentCall:
    """Until the call is connected (a notification or a re-read says so), within the deadline."""
    while left() > 0:
        try:
            async with asyncio.timeout(min(RE_READ_EVERY_S, max(0.01, left()))):
                await connected.wait()
        except TimeoutError:
            pass
        now = await read_call(client, call.conversation_id, user_id)
        if now is None or now.state in ("disconnected", "terminated"):
            raise MuteFailed(f"call {call.conversation_id} ended before it was connected")
        if now.connected:
            return now
        connected.clear()
    raise MuteFailed(f"call {call.conversation_id} did not connect in time (HTTP 409 on every attempt)")


async def _confirm(client: GenesysClient, call: AgentCall, user_id: str, want: bool, confirmed: asyncio.Future, left) -> str | None:
    """The notification, else a re-read every half second, until the deadline."""
    while left() > 0:
        try:
            async with asyncio.timeout(min(RE_READ_EVERY_S, max(0.01, left()))):
                return await asyncio.shield(confirmed)
        except TimeoutError:
            pass
        now = await read_call(client, call.conversation_id, user_id)
        if now is not None and now.muted == want:
            return "re-read"
    return None


async def mute_status(client: GenesysClient, conversation_id: str | None) -> list[AgentCall]:
    user_id = await agent_user_id(client)
    try:
        calls = await active_calls(client, user_id)
    except GenesysError as exc:
        if exc.status == 400:
            raise MuteFailed(f"cannot list the agent's calls ({exc}); run `agentd login`", EXIT_USAGE) from None
        raise
    if conversation_id:
        return [choose_call(calls, conversation_id)]
    if not calls:
        raise MuteFailed("no active call: mute applies to a call, and the agent is on none")
    return calls


# -- the command ----------------------------------------------------------------------------

HELP = "mute or unmute the agent's microphone on the active call (per call), or show its state"
DESCRIPTION = (
    "Mute applies per call: it sets the agent's participant on one active call to muted or not "
    "(PATCH /api/v2/conversations/calls/{conversationId}/participants/{participantId}, as the Genesys "
    "WebRTC SDK does); a new call starts unmuted. The change is confirmed by the call notification or by "
    "re-reading the call within --timeout. Needs the agent's own login (`agentd login`). "
    "Exit 0: done; 1: no active call or not confirmed; 2: several active calls without --conversation."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("on", "off", "toggle", "status"), help="on: mute; off: unmute; toggle; status: show the state")
    parser.add_argument("--conversation", metavar="ID", default=None, help="the call to act on when the agent has several")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S", help="deadline for the change and its confirmation (default 10)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_command(args: argparse.Namespace, app) -> Any:
    if not 0.1 <= args.timeout <= 300:
        raise UsageError("--timeout must be between 0.1 and 300 seconds")
    settings = app.config.section("genesys")
    if not has_credentials(settings):
        raise UsageError(no_credentials_message(settings))

    async def go() -> int:
        async with GenesysClient(settings) as client:
            try:
                if args.action == "status":
                    calls = await mute_status(client, args.conversation)
                    if args.json:
                        print(json.dumps([c.to_dict() for c in calls], indent=2))
                    for call in calls if not args.json else ():
                        print(f"{call.conversation_id}: {'muted' if call.muted else 'not muted'} (call {call.state})")
                    return EXIT_OK
                result = await change_mute(client, args.action, conversation_id=args.conversation, timeout_s=args.timeout)
            except MuteFailed as exc:
                print(f"agentd mute: {exc}", flush=True)
                return exc.code
        if args.json:
            print(json.dumps(result.to_dict(), indent=2))
        else:
            state = "muted" if result.muted else "unmuted"
            how = {
                "already": "it already was",
                "notification": f"confirmed by the call notification after {result.elapsed_ms:.0f} ms",
                "re-read": f"confirmed by re-reading the call after {result.elapsed_ms:.0f} ms",
            }[result.confirmed_by]
            print(f"{state}: conversation {result.conversation_id} ({how})")
        return EXIT_OK

    return go()


@hookimpl
def agentd_commands():
    return [Command("mute", HELP, add_arguments, run_command, description=DESCRIPTION)]
