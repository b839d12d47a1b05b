"""What every benchmark shares: servers, the machine, wrk and dnsperf, statistics, reports."""
