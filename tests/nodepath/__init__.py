"""Lab tests of our real node's data paths (magicsock in mesh-helper)."""
