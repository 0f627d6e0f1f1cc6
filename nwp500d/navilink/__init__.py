"""NaviLink cloud REST client: sign-in, token refresh and device discovery for the MQTT session."""
