"""The operator's `terra` command (`cli`): `up` (embedded servers in `servers`, the
services as supervised processes in `processes`, the list of services in `services`),
`status`, `provision`, credentials and S3 policies (`storage_policies`), and the
generated pages (`security_matrix`, `config_page`).

May import: every room of `terra`, `contracts`. Services are named here as data (the
module `python -m` runs), never imported statically; the one exception is
`config_page`, which loads each service's `<module>.config` by name to document its
settings (what `make docs` runs, never a service).
"""
