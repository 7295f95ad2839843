"""The harness for tests and benches: a 3-node NATS cluster (`cluster`) and services run
as processes against given servers (`stack`). Not part of any service; it may import
anything public, and nothing but tests and benches imports it.
"""
