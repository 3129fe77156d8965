"""Command-line entry points. Heavy imports happen inside each `main()` so `--help` is instant."""
