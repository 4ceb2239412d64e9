"""Network faults for the fault tests: a real TCP fault proxy (Toxiproxy) between the clients and the local broker."""
