"""Suspicion scores and the decision ladder. Pure: no clock (the caller passes `now`), no I/O.

Each subject — an account ("acct:NAME") or, for what happens before anyone is authenticated, an
address ("ip:1.2.3.4") — has a score that decays exponentially (half-life `half_life_s`) and grows
by the weight of each violation. The ladder, checked after every violation:

    refuse/clamp  always, by the sim's validators (the input never takes effect)
    warn          score >= warn_at (once, until the score has fallen below warn_at / 2)
    kick          score >= kick_at
    ban           score >= ban_at, or score >= kick_at after `kicks_before_ban` kicks;
                  `ban_s` long, permanent once the subject has been banned
                  `bans_before_permanent` - 1 times before

In "observe" mode the same decisions are made and audited but not enforced (`enforced` False), so a
new tolerance can be tried on live traffic first.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from engine.security.fairplay.kinds import DEFAULT_WEIGHTS, kind_name

Action = Literal["warn", "kick", "ban"]
MODES: Final = ("enforce", "observe", "off")


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    mode: str = "enforce"
    half_life_s: float = 60.0
    warn_at: float = 10.0
    kick_at: float = 30.0
    ban_at: float = 60.0
    kicks_before_ban: int = 2
    ban_s: float = 3600.0
    bans_before_permanent: int = 3
    kick_quiet_s: float = 1.0  # after a kick, no new kick/ban of the subject for this long
    evidence_rows: int = 32  # violations kept per subject as evidence
    max_subjects: int = 100_000  # bounded memory under a flood of fresh subjects
    weights: Mapping[int, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"policy mode must be one of {MODES}, not {self.mode!r}")
        if not (0 < self.warn_at <= self.kick_at <= self.ban_at) or not math.isfinite(self.ban_at):
            raise ValueError("thresholds must satisfy 0 < warn_at <= kick_at <= ban_at < inf")
        if self.half_life_s <= 0 or self.ban_s <= 0:
            raise ValueError("half_life_s and ban_s must be positive")


@dataclass(frozen=True, slots=True)
class Violation:
    kind: int
    subject: str
    tick: int  # campaign tick it was raised at (the journal's tick for sim violations)
    value: float
    limit: float

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": kind_name(self.kind),
            "tick": self.tick,
            "value": _finite(self.value),
            "limit": _finite(self.limit),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    subject: str
    score: float
    enforced: bool
    evidence: tuple[Violation, ...]
    ban_s: float | None = None  # for a ban: its length, None = permanent

    @property
    def tick_range(self) -> tuple[int, int]:
        """The journal ticks that reproduce the evidence (`arbiter replay --from-tick --to-tick`)."""
        ticks = [v.tick for v in self.evidence]
        return (min(ticks), max(ticks)) if ticks else (0, 0)

    def to_json(self) -> dict[str, Any]:
        lo, hi = self.tick_range
        return {
            "action": self.action,
            "subject": self.subject,
            "score": round(self.score, 3),
            "enforced": self.enforced,
            "ban_s": self.ban_s,
            "from_tick": lo,
            "to_tick": hi,
            "violations": [v.to_json() for v in self.evidence],
        }


@dataclass(slots=True)
class Suspicion:
    score: float = 0.0
    at: float = 0.0  # when `score` was last brought up to date
    warned: bool = False
    kicks: int = 0
    bans: int = 0
    quiet_until: float = -math.inf
    evidence: deque[Violation] = field(default_factory=deque)


class Policy:
    def __init__(self, cfg: PolicyConfig | None = None) -> None:
        self.cfg = cfg or PolicyConfig()
        self._subjects: dict[str, Suspicion] = {}
        self._decay = math.log(2.0) / self.cfg.half_life_s

    def __len__(self) -> int:
        return len(self._subjects)

    def _decayed(self, s: Suspicion, now: float) -> float:
        dt = now - s.at
        if dt > 0:
            s.score *= math.exp(-self._decay * dt)
            s.at = now
        return s.score

    def score(self, subject: str, now: float) -> float:
        s = self._subjects.get(subject)
        return 0.0 if s is None else self._decayed(s, now)

    def record(self, subject: str) -> Suspicion | None:
        return self._subjects.get(subject)

    def observe(self, v: Violation, now: float) -> Decision | None:
        """Add one violation to its subject's score; the decision it triggers, if any."""
        cfg = self.cfg
        if cfg.mode == "off":
            return None
        s = self._subjects.get(v.subject)
        if s is None:
            if len(self._subjects) >= cfg.max_subjects:
                self._evict(now)
            s = self._subjects[v.subject] = Suspicion(at=now)
        score = self._decayed(s, now) + float(cfg.weights.get(v.kind, 1.0))
        s.score = score
        s.evidence.append(v)
        if len(s.evidence) > cfg.evidence_rows:
            s.evidence.popleft()
        if s.warned and score < cfg.warn_at / 2:
            s.warned = False
        enforced = cfg.mode == "enforce"
        if score >= cfg.kick_at and now >= s.quiet_until:
            if score >= cfg.ban_at or s.kicks >= cfg.kicks_before_ban:
                s.bans += 1
                permanent = s.bans >= cfg.bans_before_permanent
                decision = self._decide("ban", v.subject, s, enforced, None if permanent else cfg.ban_s)
                s.score, s.kicks, s.warned = 0.0, 0, False
                s.quiet_until = now + cfg.kick_quiet_s
                return decision
            s.kicks += 1
            s.quiet_until = now + cfg.kick_quiet_s
            return self._decide("kick", v.subject, s, enforced)
        if score >= cfg.warn_at and not s.warned:
            s.warned = True
            return self._decide("warn", v.subject, s, True)
        return None

    def _decide(
        self, action: Action, subject: str, s: Suspicion, enforced: bool, ban_s: float | None = None
    ) -> Decision:
        return Decision(action, subject, s.score, enforced, tuple(s.evidence), ban_s)

    def prune(self, now: float, below: float = 0.05) -> int:
        """Drop subjects whose score decayed to nothing and who were never kicked or banned."""
        gone = [k for k, s in self._subjects.items() if not s.kicks and not s.bans and self._decayed(s, now) < below]
        for k in gone:
            del self._subjects[k]
        return len(gone)

    def _evict(self, now: float) -> None:
        if not self.prune(now):
            # Still full of live scores: drop the lowest, which is the least evidence to lose.
            victim = min(self._subjects, key=lambda k: self._decayed(self._subjects[k], now))
            del self._subjects[victim]


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else repr(x)
