"""The soak (issue 14): a compressed hall day under a seeded fault injector, checked for loss.

run.py starts the parts (parts.py), the hall around the box (world.py) and the injector
(faults.py), then holds the evidence against the ledger (check.py). docs/soak.md explains the
printout.
"""
