"""Host events from the systemd journal: parsing, normalising, reading windows, correlating them with drops."""
