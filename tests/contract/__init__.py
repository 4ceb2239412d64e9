"""The engine contract suite: every ExecutionEngine passes the same behavioural tests unchanged."""
