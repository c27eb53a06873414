"""Fault injection: a ledger of every task kept outside the broker, and a checker that counts what a fault cost."""
