"""auth_service: accounts, sign-in (password and Google), access and refresh tokens.

Answers the gateway over NATS request/reply (`contracts.topology.AuthRpc`) in the
`AUTH_QUEUE_GROUP` queue group, so replicas share the load.
"""
