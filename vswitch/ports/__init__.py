"""Port adapters: one module per transport (docs/architecture.md, who owns what)."""
