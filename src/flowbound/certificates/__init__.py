"""Certificates and lower bounds: the paper's global bounds and the certified SDP
solver, Theorems 1-2 and Algorithms 1-2, the per-digit certificate in its parts
(pixels, ellipsoid, propagation, local: the cascade), and the bound registry with
the certified 0/1 adversarial loss.

May import: the ground floor, :mod:`flowbound.threat`, :mod:`flowbound.networks`,
:mod:`flowbound.attacks`.
"""
