"""Lab tests of the control plane: our node against a real headscale (unit tests: tests/unit/control/)."""
