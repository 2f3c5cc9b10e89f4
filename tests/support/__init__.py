"""Test support: local servers that speak hosted services' wire protocols, and their fixtures."""
