"""Turn simulated conversations into message rows, one "slot" at a time.

A conversation is a fixed sequence of optional slots (system note, opening, first reply,
email answer, tool calls, answer, follow-up, late email request, closing). Each slot is
built for all conversations at once as a masked column; a message's ``turn`` is the running
count of slots present before it, so turns are 0..n-1 without gaps. The loop runs over the
~14 slots, never over conversations or messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from data_fixtures import design as D
from data_fixtures import phrases, text
from data_fixtures.simulate import OTHER_TOOL_NAMES, Simulation

# Median seconds before a message, per channel (order of design.CHANNELS).
USER_DELAY_S = np.array([30.0, 7200.0, 8.0, 90.0])
ASSISTANT_DELAY_S = np.array([3.0, 300.0, 2.0, 6.0])
TOOL_CALL_DELAY_S = 1.0
TOOL_RESULT_DELAY_S = 0.6
P_ATTACHMENT_ONLY = 0.01  # follow-up with no text (an image), so text has some nulls


@dataclass
class Messages:
    """Message rows (sorted by conversation, turn) and per-conversation turn bookkeeping."""

    rows: pl.DataFrame  # conv (row index), turn, ts_us, role, text, tool_name
    n_turns: np.ndarray
    email_turn: np.ndarray  # -1 where the agent never asked
    ended_us: np.ndarray


def _delays(rng: np.random.Generator, median_s: np.ndarray | float, channel: np.ndarray) -> np.ndarray:
    med = median_s[channel] if isinstance(median_s, np.ndarray) else np.full(len(channel), median_s)
    return (med * np.exp(0.5 * rng.standard_normal(len(channel))) * 1e6).astype(np.int64)


def _choice(rng: np.random.Generator, k: int, mask: np.ndarray) -> np.ndarray:
    """Template index per conversation, -1 where the slot is absent."""
    return np.where(mask, rng.integers(0, k, len(mask)), -1)


def conversation_fields(sim: Simulation, rng: np.random.Generator) -> dict[str, pl.Series]:
    """String columns used to fill templates: PII, order numbers, routing labels."""
    c = sim.conv
    n = len(c["day"])
    anon_email = text.fake_emails(rng, n)
    known_email = sim.customer_email.gather(pl.Series(c["cust"].astype(np.uint32)))
    email = pl.select(pl.when(pl.Series(c["anonymous"])).then(anon_email).otherwise(known_email)).to_series()
    phone = text.fake_phones(rng, n)
    # {pii}: email 45%, phone 30%, nothing 25%.
    kind = rng.choice(3, size=n, p=[0.45, 0.30, 0.25])
    pii = pl.select(
        pl.when(pl.Series(kind == 0)).then(email).when(pl.Series(kind == 1)).then(phone).otherwise(pl.lit(""))
    ).to_series()
    agent_version = text.pick((D.AGENT_V1, D.AGENT_V2), c["v2"].astype(np.int64))
    return {
        "email": email.alias("email"),
        "phone": phone.alias("phone"),
        "pii": pii.alias("pii"),
        "order": text.fake_order_numbers(rng, n),
        "card4": text.fake_card4(rng, n),
        "channel": text.pick(D.CHANNELS, c["channel"]).alias("channel"),
        "skill": text.pick(D.SKILLS, c["skill"]).alias("skill"),
        "agent_version": agent_version.alias("agent_version"),
    }


def build_messages(sim: Simulation, fields: dict[str, pl.Series], rng: np.random.Generator) -> Messages:
    """Assemble all message rows of all conversations (see module docstring)."""
    c = sim.conv
    n = len(c["day"])
    ch = c["channel"]
    all_ = np.ones(n, dtype=bool)
    early, late = c["early"], c["asked"] & ~c["early"]
    system = rng.random(n) < D.P_SYSTEM_MESSAGE
    followup = late | (rng.random(n) < D.P_FOLLOWUP)
    other = c["other_tool"]

    turn = np.zeros(n, dtype=np.int32)
    offset = np.zeros(n, dtype=np.int64)
    email_turn = np.full(n, -1, dtype=np.int32)
    frames: list[pl.DataFrame] = []

    def add(
        mask: np.ndarray, role: str, texts: pl.Series, tool: pl.Series | str | None, delay: np.ndarray
    ) -> None:
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            return
        offset[rows] += delay[rows]
        if isinstance(tool, pl.Series):
            tool_col = tool.gather(pl.Series(rows.astype(np.uint32))).alias("tool_name")
        else:
            tool_col = pl.repeat(tool, rows.size, dtype=pl.String, eager=True).alias("tool_name")
        frames.append(
            pl.DataFrame(
                {
                    "conv": rows.astype(np.int64),
                    "turn": turn[rows],
                    "ts_us": c["ts_start_us"][rows] + offset[rows],
                    "role": pl.repeat(role, rows.size, dtype=pl.String, eager=True),
                    "text": texts,
                    "tool_name": tool_col,
                }
            )
        )
        turn[rows] += 1

    zero = np.zeros(n, dtype=np.int64)
    user_delay = lambda: _delays(rng, USER_DELAY_S, ch)
    asst_delay = lambda: _delays(rng, ASSISTANT_DELAY_S, ch)

    # 0. optional system note
    add(
        system,
        "system",
        text.fill_templates(phrases.SYSTEM_PROMPTS, _choice(rng, 3, system), fields),
        None,
        zero,
    )
    # 1. customer's opening: a paraphrase of the intent, with PII / order number / card
    opening_tpls: list[str] = []
    starts: list[int] = []
    for name in D.INTENTS:
        starts.append(len(opening_tpls))
        opening_tpls.extend(phrases.INTENT_OPENINGS[name])
    n_par = np.array([len(phrases.INTENT_OPENINGS[name]) for name in D.INTENTS])
    opening_choice = np.array(starts)[c["intent"]] + (rng.random(n) * n_par[c["intent"]]).astype(np.int64)
    sys_gap = np.where(system, _delays(rng, 1.0, ch), 0)
    add(all_, "user", text.fill_templates(opening_tpls, opening_choice, fields), None, sys_gap)
    # 2. first reply: greeting, plus the email request when asking early
    greet = text.fill_templates(
        phrases.ASSISTANT_GREETINGS, _choice(rng, len(phrases.ASSISTANT_GREETINGS), all_)
    )
    # "Before we finish, ..." (the last request) only reads naturally late in the conversation.
    req_early = text.fill_templates(
        phrases.EMAIL_REQUESTS, _choice(rng, len(phrases.EMAIL_REQUESTS) - 1, all_)
    )
    first = pl.select(
        pl.when(pl.Series(early)).then(pl.concat_str([greet, pl.lit(" "), req_early])).otherwise(greet)
    ).to_series()
    email_turn[early] = turn[early]
    add(all_, "assistant", first, None, asst_delay())
    # 3. customer answers with the email (early ask)
    replies = text.fill_templates(
        phrases.USER_EMAIL_REPLIES, _choice(rng, len(phrases.USER_EMAIL_REPLIES), early), fields
    )
    add(early, "user", replies, None, user_delay())
    # 4-5. lookup_order (tier2 after the rollout)
    lk = c["lookup_used"]
    call = phrases.TOOL_CALL_TEXT.format(tool="lookup_order")
    add(
        lk,
        "assistant",
        text.fill_templates([call], _choice(rng, 1, lk)),
        "lookup_order",
        _delays(rng, TOOL_CALL_DELAY_S, ch),
    )
    add(
        lk,
        "tool",
        text.fill_templates([phrases.TOOL_RESULTS["lookup_order"]], _choice(rng, 1, lk), fields),
        "lookup_order",
        _delays(rng, TOOL_RESULT_DELAY_S, ch),
    )
    # 6-7. the intent's own tool (refund, password reset, knowledge base)
    has_other = other > 0
    other_names = pl.Series(OTHER_TOOL_NAMES, dtype=pl.String).gather(pl.Series(other.astype(np.uint32)))
    calls = [phrases.TOOL_CALL_TEXT.format(tool=t) for t in OTHER_TOOL_NAMES[1:]]
    results = [phrases.TOOL_RESULTS[t] for t in OTHER_TOOL_NAMES[1:]]
    add(
        has_other,
        "assistant",
        text.fill_templates(calls, other - 1),
        other_names,
        _delays(rng, TOOL_CALL_DELAY_S, ch),
    )
    add(
        has_other,
        "tool",
        text.fill_templates(results, other - 1, fields),
        other_names,
        _delays(rng, TOOL_RESULT_DELAY_S, ch),
    )
    # 8. answer
    add(
        all_,
        "assistant",
        text.fill_templates(phrases.ASSISTANT_ANSWERS, _choice(rng, len(phrases.ASSISTANT_ANSWERS), all_)),
        None,
        asst_delay(),
    )
    # 9-10. follow-up question and second answer
    # A few follow-ups are attachments only: ``text`` is nullable in the contract.
    follow_text = text.fill_templates(
        phrases.USER_FOLLOWUPS, _choice(rng, len(phrases.USER_FOLLOWUPS), followup)
    )
    follow_text = follow_text.scatter(np.flatnonzero(rng.random(follow_text.len()) < P_ATTACHMENT_ONLY), None)
    add(followup, "user", follow_text, None, user_delay())
    add(
        followup,
        "assistant",
        text.fill_templates(
            phrases.ASSISTANT_ANSWERS, _choice(rng, len(phrases.ASSISTANT_ANSWERS), followup)
        ),
        None,
        asst_delay(),
    )
    # 11-12. late email request and the customer's answer
    email_turn[late] = turn[late]
    add(
        late,
        "assistant",
        text.fill_templates(phrases.EMAIL_REQUESTS, _choice(rng, len(phrases.EMAIL_REQUESTS), late)),
        None,
        asst_delay(),
    )
    add(
        late,
        "user",
        text.fill_templates(
            phrases.USER_EMAIL_REPLIES, _choice(rng, len(phrases.USER_EMAIL_REPLIES), late), fields
        ),
        None,
        user_delay(),
    )
    # 13. closing: "marked as resolved" when the agent closes it, else a sign-off
    marked = c["agent_marked_resolved"]
    closing_tpls = list(phrases.AGENT_CLOSINGS) + list(phrases.AGENT_SIGNOFFS)
    k_close = len(phrases.AGENT_CLOSINGS)
    closing_choice = np.where(
        marked,
        rng.integers(0, k_close, n),
        k_close + rng.integers(0, len(phrases.AGENT_SIGNOFFS), n),
    )
    add(all_, "assistant", text.fill_templates(closing_tpls, closing_choice), None, asst_delay())

    # Row position is known from the turn counts: conversation's first row + turn. One
    # gather by the inverse permutation replaces a two-key sort of ~8 rows/conversation.
    stacked = pl.concat(frames, how="vertical")
    first_row = np.cumsum(turn, dtype=np.int64) - turn
    pos = first_row[stacked["conv"].to_numpy()] + stacked["turn"].to_numpy()
    perm = np.empty(pos.size, dtype=np.uint32 if pos.size < 2**32 else np.uint64)
    perm[pos] = np.arange(pos.size, dtype=perm.dtype)
    rows = stacked.select(pl.all().gather(pl.Series(perm)))
    return Messages(rows=rows, n_turns=turn, email_turn=email_turn, ended_us=c["ts_start_us"] + offset)
