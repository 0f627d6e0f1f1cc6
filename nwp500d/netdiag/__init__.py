"""Network evidence: kernel TCP counters, endpoint probes, link events, and the NAT keep-alive experiment."""
