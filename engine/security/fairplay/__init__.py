"""Fair play: what the engine does with the validators' evidence (docs/fairplay.md).

kinds.py (violation kinds and their weights), policy.py (suspicion scores and the decision
ladder; pure, the caller passes the time), signals.py (statistical signals), banlist.py (bans in
force, by account and IP range), conn_limit.py (connection floods per IP), referee.py (the wiring
the server calls: violations in, warnings/kicks/bans and audit entries out).
"""
