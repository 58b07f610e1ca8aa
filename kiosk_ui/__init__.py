"""The pages the box serves (kiosk, evaluator, ...), and their installed front-end assets.

A package only so that the wheel carries the directory: edge.resources finds it through
importlib.resources, from a checkout and from an installed wheel alike.
"""
