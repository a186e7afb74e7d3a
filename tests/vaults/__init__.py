"""The archive-vault contract suite (local vault, CAS emulator, moto Glacier)."""
