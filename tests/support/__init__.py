"""Test doubles the product must not ship: the canned engine and a `mesh-helper serve` that runs it."""
