"""The networks: the book's architectures and the one view of their layers
(W, V, the STN's transform) that bounds and losses read.

May import: the ground floor and :mod:`flowbound.threat`.
"""
