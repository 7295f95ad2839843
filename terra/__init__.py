"""The runtime every Terra service shares: settings, broker, provisioning, storage,
telemetry, logging, the embedded local servers and the `terra` command."""
