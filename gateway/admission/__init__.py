"""Admission: what the gateway decides and records before a job is queued.

Each use case runs one sequence: refuse what may not run (a model or photo set that is
not the caller's, a cap reached), claim the user's slot, record the job as queued, count
the commands ahead, send the command, announce `queued`. Nothing is undone when a step
fails midway (the answer is a 503): every step is safe to repeat, so a retry with the same
`Idempotency-Key` (the same job id, so the same message id) goes on where the failure left
it, and the stream drops a second copy of a command that was stored.

The use cases raise a `gateway.refusals.Refused` for each refusal; its HTTP answer is
`gateway.problems`'.
"""

