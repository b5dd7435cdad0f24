"""Verification on the new kernel: did the transition land, and did devices come back?"""
