"""sessions.list: the sessions this worker owns, reconciled with each provider's own list."""

from __future__ import annotations

from contracts.commands import SessionsList
from contracts.common import RejectCode
from contracts.events import SessionInfo, SessionsListed
from worker.handlers.context import CommandContext, Rejected

MAX_LISTED = 1000


async def list_sessions(cmd: SessionsList, ctx: CommandContext) -> None:
    if not cmd.reply_to:
        raise Rejected(RejectCode.VALIDATION, "sessions.list needs reply_to to answer to")
    wanted_ids = set(cmd.filter.session_ids or ())
    wanted_states = set(cmd.filter.states or ())
    remote: dict[str, str] = {}
    for provider in ctx.services.providers.values():
        live = await provider.list_live(deadline=ctx.deadline)
        remote.update((r.provider_session_id, r.status) for r in live)
    infos = [
        SessionInfo(
            session_id=s.session_id,
            heygen_session_id=s.heygen_session_id,
            state=s.state,
            owner=s.owner,
            created_at=s.created_at,
            partition=s.partition,
            provider=s.provider,
            heygen_status=remote.get(s.heygen_session_id or "", "absent"),
        )
        for s in ctx.services.registry
        if (not wanted_ids or s.session_id in wanted_ids)
        and (not wanted_states or s.state in wanted_states)
        and ctx.may_see(s)
    ]
    reply = SessionsListed(
        sessions=infos[:MAX_LISTED],
        truncated=len(infos) > MAX_LISTED,
        session_id=None,
        seq=None,
        causation_id=cmd.command_id,
        correlation_id=cmd.correlation_id,
        worker_id=ctx.services.emitter.worker_id,
    )
    await ctx.services.emitter.reply(reply, cmd.reply_to)
