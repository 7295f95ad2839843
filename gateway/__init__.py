"""The public HTTP and WebSocket surface: REST calls become NATS commands and requests,
events come back as WebSocket messages."""
