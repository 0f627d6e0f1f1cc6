"""sysexits(3) codes, so systemd and scripts can tell a bad config from a rejected password from an outage."""

OK = 0
USAGE = 64
DATAERR = 65
NOINPUT = 66
UNAVAILABLE = 69
SOFTWARE = 70
CANTCREAT = 73
NOPERM = 77
CONFIG = 78
