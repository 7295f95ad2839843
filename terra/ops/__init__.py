"""The operator's `terra` command (`cli`): `up` (embedded servers in `servers`, the
services as supervised processes in `processes`, the list of services in `services`),
`status`, `provision`, credentials, and the generated pages (`security_matrix`).

May import: every room of `terra`, `contracts`. Services are named here as data (module
names to start), never imported.
"""
