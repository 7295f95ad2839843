"""One sender per channel: a target and a notice in, an `Outcome` out (never an exception
for what the remote end answered)."""
