"""Port adapters: one module per transport (DESIGN.md, port types)."""
