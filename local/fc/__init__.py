"""A local stand-in for Function Compute: its Python runtime, its invoke API, and s.yaml."""
