"""The kernel-ridge-regression family: KIP, FRePo, RFAD (krr.py holds what they share)."""
