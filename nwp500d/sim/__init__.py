"""Local stand-ins for the NaviLink cloud, for tests and the demo."""
