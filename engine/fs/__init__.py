"""Files a root process reads and writes safely: trusted paths, atomic replacement, auth-key files."""
