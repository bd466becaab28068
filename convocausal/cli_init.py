"""``convocausal init --raw DIR``: starter ``signals.yaml`` and ``questions.yaml`` from what DIR holds.

Why: the packaged configs describe the synthetic demo agent; a new user's channels, queues,
agent builds, tools and outcomes are different, and writing the first config by hand means
reading the contract, the loaders and the data at once. ``init`` reads the landing directory
(docs/CONTRACT.md §1) and writes configs that load as they are (checked with the project's own
loaders before they are written) and run: known tools and downstream outcomes filled in from
the data, intent rules and behaviours left empty with the most frequent openers and examples as
comments, and one commented example question per design, its values (launch dates, treated
groups) proposed from when agent builds and tools first appeared and where.

How the data are read: DuckDB aggregates over every transcript parquet file at once
(``union_by_name``), so the cost is one scan, never a Python loop over rows; only the openers
(a bounded sample of first customer messages) come back to Python, where they pass through the
project's PII redaction (``extract/redact.py``, vectorized polars) before they are counted or
written. Every value written (labels too) is redacted: a config file is shared and committed.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from convocausal.cli_common import UsageError, common_options

OPENER_SAMPLE = 200_000  # first customer messages sampled for the opener counts
N_OPENERS = 15
MAX_TOOLS = 100  # configs/signals.py MAX_LIST_ITEMS
MAX_SHOWN = 12
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def add_init_parser(sub) -> None:
    p = sub.add_parser("init", parents=[common_options()],
                       help="write starter signals.yaml and questions.yaml for a landing directory",
                       description="Read a landing directory (docs/CONTRACT.md §1) and write starter configs that "
                                   "load as they are: signals.yaml (tools, outcomes, opener candidates for intent "
                                   "rules) and questions.yaml (one commented example question per design).")
    p.add_argument("--raw", required=True, type=Path, metavar="DIR",
                   help="landing directory: DIR/transcripts/ (parquet, flat or date=YYYY-MM-DD/), optional "
                        "DIR/outcomes.parquet and DIR/customers.parquet")
    p.add_argument("--out", type=Path, default=Path("."), metavar="CONFIG_DIR",
                   help="folder to write signals.yaml and questions.yaml into (default: the current directory)")
    p.add_argument("--force", action="store_true", help="overwrite signals.yaml / questions.yaml if they exist")
    p.set_defaults(func=cmd_init)


def cmd_init(args) -> int:
    raw, out = Path(os.path.abspath(args.raw)), Path(args.out)
    if not raw.is_dir():
        raise UsageError(f"--raw {args.raw}: not a directory")
    targets = {"signals": out / "signals.yaml", "questions": out / "questions.yaml"}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not args.force:
        raise UsageError(f"{', '.join(existing)} already exist(s); pass --force to overwrite, or --out another folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: not a directory")
    found = scan_landing(raw)
    signals_text = signals_yaml(found)
    questions_text = questions_yaml(found)
    out.mkdir(parents=True, exist_ok=True)
    _write_checked(targets["signals"], signals_text, _load_signals)
    _write_checked(targets["questions"], questions_text, _load_questions)
    print(f"read {args.raw}: {found.n_conversations:,} conversations, {found.n_messages:,} messages, "
          f"{found.first_day} to {found.last_day}")
    print(f"  channels {_few([c for c, _ in found.channels])}; skills {_few([s for s, _ in found.skills])}; "
          f"agent versions {_few([v.name for v in found.versions])}; tools {_few([t.name for t in found.tools])}")
    print(f"  outcomes export: {_few(found.outcomes) if found.outcomes_file else 'none'}; "
          f"customers export: {'yes' if found.has_customers else 'none'}")
    print(f"wrote {targets['signals']}: {len(found.known_tools)} tool(s), {len(found.outcomes)} downstream outcome(s), "
          f"{len(found.openers)} opener(s) as commented intent candidates")
    print(f"wrote {targets['questions']}: no question registered yet; {len(question_examples(found))} commented "
          "examples, one per design")
    print("next: edit both files (their comments say how), then run: "
          f"convocausal run --raw {args.raw} --signals {targets['signals']} --questions {targets['questions']}")
    return 0


# ============================================================================ reading the landing dir
@dataclass
class Version:
    name: str
    conversations: int
    first_day: date
    channels: list[str]
    skills: list[str]


@dataclass
class Tool:
    name: str
    conversations: int
    first_day: date
    skills: list[str]


@dataclass
class Landing:
    """What ``init`` found: counts and label values, all redacted; no message text but the openers."""

    raw: Path
    columns: list[str]
    n_conversations: int
    n_messages: int
    first_day: date
    last_day: date
    channels: list[tuple[str, int]]
    skills: list[tuple[str, int]]
    versions: list[Version]
    tools: list[Tool]
    openers: list[tuple[str, int]]
    n_opener_sample: int
    outcomes_file: bool
    outcomes: list[str] = field(default_factory=list)  # contract outcome columns present
    outcome_extra: list[str] = field(default_factory=list)  # other columns: not read by extraction
    has_customers: bool = False
    has_memory: bool = False

    @property
    def known_tools(self) -> list[Tool]:
        return [t for t in self.tools if _NAME_RE.match(t.name)][:MAX_TOOLS]

    @property
    def all_skills(self) -> list[str]:
        return [s for s, _ in self.skills]

    @property
    def all_channels(self) -> list[str]:
        return [c for c, _ in self.channels]


def scan_landing(raw: Path) -> Landing:
    """Aggregate the landing directory in DuckDB; raises UsageError naming what is missing or unreadable."""
    import duckdb

    from extract.raw_files import discover_transcripts, optional_table_files
    from extract.schemas import OUTCOME_DTYPES, TRANSCRIPT_REQUIRED

    hive, flat = discover_transcripts(raw)  # RawInputError (exit 2) when there is no parquet at all
    files = [str(f) for day_files in hive.values() for f in day_files] + [str(f) for f in flat]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.read_parquet(files, union_by_name=True, hive_partitioning=False).create_view("t")
        columns = [r[0] for r in con.execute("DESCRIBE t").fetchall()]
    except duckdb.Error as exc:
        raise UsageError(f"{raw / 'transcripts'}: cannot read the parquet files ({_first_line(exc)})") from exc
    missing = [c for c in TRANSCRIPT_REQUIRED if c not in columns]
    if missing:
        raise UsageError(f"{raw / 'transcripts'}: no column {', '.join(missing)} (required by docs/CONTRACT.md §1; "
                         f"found: {', '.join(columns)})")
    opt = {c: (c if c in columns else "NULL") for c in ("skill", "tool_name", "text", "memory_items")}
    try:
        con.execute(f"""CREATE TEMP TABLE conv AS SELECT conversation_id, CAST(min(ts) AS DATE) AS day,
                        min(channel) AS channel, min(agent_version) AS agent_version,
                        CAST(min({opt['skill']}) AS VARCHAR) AS skill FROM t GROUP BY 1""")
        n_conv, n_msg, first, last = con.execute(
            "SELECT (SELECT count(*) FROM conv), (SELECT count(*) FROM t), min(day), max(day) FROM conv").fetchone()
        channels = con.execute("SELECT channel, count(*) FROM conv GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
        skills = con.execute("SELECT skill, count(*) FROM conv WHERE skill IS NOT NULL GROUP BY 1 "
                             "ORDER BY 1").fetchall()
        versions = con.execute(
            "SELECT agent_version, count(*), min(day), list(DISTINCT channel ORDER BY channel), "
            "list(DISTINCT skill ORDER BY skill) FILTER (WHERE skill IS NOT NULL) FROM conv "
            "GROUP BY 1 ORDER BY 3, 1").fetchall()
        tools = [] if opt["tool_name"] == "NULL" else con.execute(
            f"SELECT tool_name, count(DISTINCT conversation_id), CAST(min(ts) AS DATE), "
            f"list(DISTINCT CAST({opt['skill']} AS VARCHAR)) FILTER (WHERE {opt['skill']} IS NOT NULL) "
            "FROM t WHERE tool_name IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
        # The sample is of conversations (a sample clause applies to its FROM, before any GROUP BY).
        opener_frame = con.sql(
            f"SELECT text FROM (SELECT CAST(arg_min({opt['text']}, turn) AS VARCHAR) AS text FROM t "
            f"WHERE role = 'user' AND {opt['text']} IS NOT NULL GROUP BY conversation_id) "
            f"USING SAMPLE reservoir({OPENER_SAMPLE} ROWS) REPEATABLE (7)").pl()
        has_memory = opt["memory_items"] != "NULL" and bool(
            con.execute("SELECT count(*) FROM t WHERE memory_items > 0").fetchone()[0])
    except duckdb.Error as exc:
        raise UsageError(f"{raw / 'transcripts'}: cannot read the transcripts ({_first_line(exc)})") from exc
    if not n_conv:
        raise UsageError(f"{raw / 'transcripts'}: the parquet files hold no messages")
    seen = [*(c for c, _ in channels), *(s for s, _ in skills), *(v[0] for v in versions),
            *(c for v in versions for c in v[3]), *(t[0] for t in tools), *(s for t in tools for s in (t[3] or []))]
    table = _redactor(seen)

    def labels(value) -> str:
        key = "" if value is None else str(value)
        if key not in table:  # a column name of a side table: not in the batch above
            table.update(_redactor([key]))
        return table[key]

    outcome_files = optional_table_files(raw, "outcomes")
    outcomes, extra = [], []
    if outcome_files:
        try:
            cols = con.read_parquet([str(f) for f in outcome_files], union_by_name=True).columns
        except duckdb.Error as exc:
            raise UsageError(f"{outcome_files[0]}: cannot read the outcomes export ({_first_line(exc)})") from exc
        outcomes = [c for c in OUTCOME_DTYPES if c in cols and c != "conversation_id"]
        extra = [c for c in cols if c not in OUTCOME_DTYPES]
    return Landing(
        raw=raw, columns=columns, n_conversations=int(n_conv), n_messages=int(n_msg), first_day=first, last_day=last,
        channels=[(labels(c), int(n)) for c, n in channels], skills=[(labels(s), int(n)) for s, n in skills],
        versions=[Version(labels(v), int(n), d, [labels(c) for c in ch], [labels(s) for s in (sk or [])])
                  for v, n, d, ch, sk in versions],
        tools=[Tool(labels(name), int(n), d, sorted(labels(s) for s in (sk or []))) for name, n, d, sk in tools],
        openers=top_openers(opener_frame["text"]), n_opener_sample=opener_frame.height,
        outcomes_file=bool(outcome_files), outcomes=outcomes, outcome_extra=[labels(c) for c in extra],
        has_customers=bool(optional_table_files(raw, "customers")), has_memory=has_memory,
    )


def _redactor(values) -> dict[str, str]:
    """Label value → its redacted text, through the project's redaction in one vectorized pass."""
    from extract.redact import redact_text

    texts = sorted({"" if v is None else str(v) for v in values})
    out = pl.DataFrame({"v": texts}, schema={"v": pl.String}).select(
        redact_text(pl.col("v")).str.replace_all(r"[\x00-\x1f\x7f-\x9f]", " "))["v"].to_list()
    return dict(zip(texts, out))


def top_openers(texts: pl.Series, n: int = N_OPENERS) -> list[tuple[str, int]]:
    """The ``n`` most frequent first customer messages: PII redacted, digits as ``#``, whitespace folded."""
    from extract.redact import redact_text

    if not len(texts):
        return []
    frame = pl.DataFrame({"text": texts}).select(
        redact_text(pl.col("text")).str.replace_all(r"[\x00-\x1f\x7f-\x9f]", " ").str.replace_all(r"\d+", "#")
        .str.replace_all(r"\s+", " ").str.strip_chars().str.slice(0, 100).alias("text"))
    counts = (frame.filter(pl.col("text") != "").group_by("text").len()
              .sort(["len", "text"], descending=[True, False]).head(n))
    return list(zip(counts["text"].to_list(), counts["len"].to_list()))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ============================================================================ writing signals.yaml
# Plain words YAML 1.1 (PyYAML) reads as booleans or null: a skill named `no` must stay a string.
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})


def _q(text: str) -> str:
    """A YAML scalar for a label: bare when it is a plain identifier YAML reads as text, else double-quoted."""
    return text if _NAME_RE.match(text) and text not in _YAML_WORDS else json_str(text)


def _comment(text: str) -> str:
    return _CONTROL.sub(" ", text)


def _few(values: list[str], n: int = 6) -> str:
    if not values:
        return "none"
    return ", ".join(values[:n]) + (f", … ({len(values)})" if len(values) > n else "")


def _keyword(opener: str) -> str:
    """A literal keyword for an intent candidate: the opener's first words, up to a redaction token or ``#``."""
    head = re.split(r"[#\[]", opener, maxsplit=1)[0]
    words = re.sub(r"[^\w' ]+", " ", head).split()[:6]
    return " ".join(words).lower()


def signals_yaml(found: Landing) -> str:
    from extract.schemas import TRANSCRIPT_DTYPES

    salt = secrets.token_hex(16)
    extra = [c for c in found.columns if c not in TRANSCRIPT_DTYPES]
    lines = [
        (f"# signals.yaml for {_comment(str(found.raw))}, written by `convocausal init` from "
         f"{found.n_conversations:,} conversations ({found.first_day} to {found.last_day})."),
        "# How transcripts become one row of signals per conversation (store table `signals`); the",
        "# packaged configs/signals.yaml is a complete example. Patterns are case-insensitive regexes",
        "# (Rust `regex` syntax: no look-around), checked when the file is loaded.",
        f"# Transcript columns found: {_comment(', '.join(found.columns))}"
        + (f"; not in docs/CONTRACT.md §1, so ignored: {_comment(', '.join(extra))}." if extra else "."),
        "",
        "version: 1",
        "",
        "intent:",
        "  opening_user_turns: 1           # classify the first customer message (known at conversation start)",
        "  default: other                  # the intent when no rule matches",
        "  rules: []",
    ]
    if found.openers:
        lines += [
            "  # No intent rule yet, so every conversation's intent is `other`. The most frequent first",
            f"  # customer messages (of {found.n_opener_sample:,} conversations"
            + (" sampled" if found.n_opener_sample < found.n_conversations else "")
            + "; PII redacted, digits shown as #) are candidates:",
            "  # replace `rules: []` by `rules:`, uncomment the entries (remove \"# \"), rename and merge them.",
            "  # Rules are ordered: the first that matches wins; `keywords` are literal text, `patterns` regexes.",
        ]
        for i, (text, n) in enumerate(found.openers, 1):
            kw = _keyword(text) or "…"
            lines += [f"  # - name: intent_{i:02d}          # {n:,} open with: {_comment(json_str(text))}",
                      f"  #   keywords: [{json_str(kw)}]"]
    lines += [
        "",
        "behaviours: []",
        "  # The treatments of matching questions: what the agent says, early or late. Each gives a column",
        "  # <name> (1 early / 0 later / null never) and <name>_turn. To add one, replace `behaviours: []`",
        "  # by `behaviours:` and uncomment (remove \"# \"):",
        "  # - name: asked_email_first",
        "  #   role: assistant",
        "  #   pattern: '\\b(share|confirm|provide|send me)\\b.{0,40}\\be-?mail\\b'",
        "  #   early_if: {turn_at_most: 3}   # or {fraction_at_most: 0.5} of the conversation",
        "",
        "tools:",
    ]
    known = found.known_tools
    if known:
        lines.append("  known:                          # tool_<name> (bool) and tool_<name>_turn per tool; plus tools_used")
        for t in known:
            lines.append(f"    - {_q(t.name):<28} # {t.conversations:,} conversations, first on {t.first_day}")
    else:
        lines.append("  known: []                       # no tool_name values found")
    skipped = [t.name for t in found.tools if not _NAME_RE.match(t.name)]
    if skipped:
        lines.append(f"  # not plain identifiers, so not listed (tools_used still has them): {_comment(_few(skipped))}")
    lines += [
        "",
        "memory:",
        "  window_days: 30                 # a prior conversation of the same customer within 30 days"
        + ("" if found.has_memory else " (no memory_items > 0 found)"),
        "",
        "outcomes:",
    ]
    if found.outcomes:
        from extract.schemas import OUTCOME_DTYPES

        lines.append("  downstream:                     # columns of the outcomes export: the agent cannot touch them")
        for name in found.outcomes:
            lines.append(f"    - {{name: {name}, dtype: {_dtype(OUTCOME_DTYPES[name])}}}")
    else:
        lines.append("  downstream: []                  # no outcomes export (RAW/outcomes.parquet) found")
    if found.outcome_extra:
        lines.append(f"  # outcomes columns outside docs/CONTRACT.md §1, not read: {_comment(_few(found.outcome_extra))}")
    lines += [
        "  transcript: []",
        "  # Outcomes read from the agent's own words are agent-controlled (flagged as gameable). To add one,",
        "  # replace `transcript: []` by `transcript:` and uncomment:",
        "  # - {name: agent_marked_resolved, role: assistant, pattern: 'marked (this|the) ticket as resolved'}",
        "",
        "customer_key:",
        f"  salt: {salt}   # customer_key = sha256(salt + customer_id); keep it secret and stable",
        "",
    ]
    return "\n".join(lines)


def json_str(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def _dtype(dtype: pl.DataType) -> str:
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_integer():
        return "int"
    return "float" if dtype.is_float() else "str"


# ============================================================================ writing questions.yaml
def _outcome(found: Landing) -> str:
    for name in ("resolved", "escalated", "reopened_7d", "csat"):
        if name in found.outcomes:
            return name
    return found.outcomes[0] if found.outcomes else "resolved"


def _covariates(found: Landing) -> list[str]:
    """Start signals every signals table has (skill and persona only when the data carry them)."""
    return ["intent", "channel", *(["skill"] if found.skills else []), "agent_version", "hour_of_day",
            "memory_has_prior_session", *(["persona_segment"] if found.has_customers else [])]


def question_examples(found: Landing) -> list[list[str]]:
    """One example per design, each a list of YAML lines (uncommented form), values proposed from the data."""
    outcome = _outcome(found)
    out = []
    # A tool there from the start (first called within the first week or tenth of the window) and used in
    # some conversations only: two variants that coexist, not a rollout.
    early = found.first_day + timedelta(days=max(7, (found.last_day - found.first_day).days // 10))
    common = [t for t in found.known_tools if t.first_day <= early
              and 0.05 <= t.conversations / found.n_conversations <= 0.95]
    if common:
        t = common[0]
        out.append([
            f"- id: {t.name}_effect"[:66],
            "  description: " + json_str(f"Does calling {t.name} in a conversation change {outcome}? (used in "
                                         f"{t.conversations / found.n_conversations:.0%} of conversations)"),
            "  design: coexisting_variants        # -> propensity matching",
            f"  outcome: {outcome}",
            f"  treatment: tool_{t.name}",
            f"  covariates: [{', '.join(_covariates(found))}]",
            "  estimand: ATT",
        ])
    else:
        out.append([
            "- id: email_early_vs_late",
            "  description: " + json_str(f"Does asking for the email early change {outcome}? "
                                         "(uncomment the behaviour asked_email_first in signals.yaml first)"),
            "  design: coexisting_variants        # -> propensity matching",
            f"  outcome: {outcome}",
            "  treatment: asked_email_first",
            f"  covariates: [{', '.join(_covariates(found))}]",
            "  estimand: ATT",
        ])
    shipped = [v for v in found.versions if v.first_day > early]
    version = shipped[-1] if shipped else None
    if version and set(version.channels) < set(found.all_channels):
        treated, unit_by = f"{{channel: [{', '.join(map(_q, version.channels))}]}}", "[channel, intent]"
    elif version and version.skills and set(version.skills) < set(found.all_skills):
        treated, unit_by = f"{{skill: [{', '.join(map(_q, version.skills))}]}}", "[skill]"
    else:
        version = None
        treated = f"{{channel: [{_q(found.all_channels[0])}]}}"
        unit_by = "[channel, intent]"
    launch = version.first_day if version else _middle(found)
    out.append([
        f"- id: {_ident('version_' + version.name) if version else 'shipped_change_example'}_launch"[:66],
        "  description: " + json_str(f"What did agent version {version.name} (first seen {launch}) do to {outcome}?"
                                     if version else "No agent version reached some cohorts only: set treated and launch"),
        "  design: shipped_change             # -> synthetic control",
        f"  outcome: {outcome}",
        f"  treated: {treated}",
        f"  launch: {launch}",
        f"  unit_by: {unit_by}",
        "  time_bucket: week",
        "  min_volume: 10                     # conversations per cohort-week; thinner cohorts are dropped",
    ])
    rollout = [t for t in found.known_tools if t.first_day > early and t.skills
               and set(t.skills) < set(found.all_skills)]
    tool = max(rollout, key=lambda t: t.conversations) if rollout else None
    skills = tool.skills if tool else found.all_skills[: max(1, len(found.all_skills) // 2)]
    out.append([
        f"- id: {tool.name + '_rollout' if tool else 'partial_rollout_example'}"[:66],
        "  description: " + json_str(f"Did switching on {tool.name} (first called {tool.first_day}, in "
                                     f"{len(tool.skills)} skill(s)) change {outcome}?" if tool
                                     else "No tool reached some skills only: set treated and launch"),
        "  design: partial_rollout            # -> difference-in-differences",
        f"  outcome: {outcome}",
        (f"  treated: {{skill: [{', '.join(map(_q, skills))}]}}" if skills
         else f"  treated: {{channel: [{_q(found.all_channels[0])}]}}"),
        f"  launch: {tool.first_day if tool else _middle(found)}",
        "  fixed_effects: [intent, hour_of_day]",
        *(["  cluster: skill"] if skills else []),
        "  time_bucket: week",
    ])
    return out


def _middle(found: Landing) -> date:
    return date.fromordinal((found.first_day.toordinal() + found.last_day.toordinal()) // 2)


def _ident(text: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return name if _NAME_RE.match(name) else "change"


def questions_yaml(found: Landing) -> str:
    lines = [
        f"# questions.yaml for {_comment(str(found.raw))}, written by `convocausal init`.",
        "# One entry per causal question; `design` picks the method:",
        "#   coexisting_variants -> propensity matching        (two behaviours coexist in the logs)",
        "#   shipped_change      -> synthetic control          (a change shipped at a known date to some cohorts)",
        "#   partial_rollout     -> difference-in-differences  (a feature reached a subset at a known date)",
        "# Every name must be a column of the `signals` table (see signals.yaml); covariates must be known at",
        "# conversation start. `convocausal run` checks every question before anything runs.",
        "questions: []",
        "# Examples proposed from the data (check every value first). To register one, replace",
        "# `questions: []` above by `questions:` and uncomment its lines (remove \"# \").",
    ]
    if not found.outcomes:
        lines.append("# No outcomes export was found: add an outcome to signals.yaml first, then set `outcome:`.")
    for example in question_examples(found):
        lines.append("#")
        lines += [f"# {_comment(line)}" for line in example]
    return "\n".join(lines) + "\n"


# ============================================================================ checked writes
def _load_signals(path: Path) -> None:
    from configs.signals import load_signals_config

    load_signals_config(path)


def _load_questions(path: Path) -> None:
    from convocausal.questions.registry import load_registry

    load_registry(path)


def _write_checked(target: Path, text: str, load) -> None:
    """Write ``text`` to a temp file beside ``target``, load it with the project's loader, then rename.

    A file ``init`` wrote that its own loader refuses would be a bug here, not the user's: it is
    reported as an internal error and nothing is left behind.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".yaml", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            load(Path(tmp))
        except Exception as exc:  # re-raised as an internal error with the file named
            raise RuntimeError(f"convocausal init wrote a {target.name} its loader refuses: {exc}") from exc
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

