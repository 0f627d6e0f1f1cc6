"""The MQTT session: pure backoff and decisions, one awscrt adapter, the supervisor that owns reconnection."""
