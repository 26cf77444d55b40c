"""Development tools, never imported by what runs next to a scanner: the synthetic scanner, the demo, the
benchmarks, and the appliance run as a child process for them."""
