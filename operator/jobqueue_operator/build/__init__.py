"""PURE builders: a JobQueue model in, the desired child objects (plain dicts) out.

Nothing here talks to the API server or to Redis, so every builder is a function tested against a golden
file. Owner references are added by the reconciler, which knows the live object's uid.
"""
