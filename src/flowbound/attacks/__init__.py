"""Attacks: stAdv, PGD, flow_pgd and flow_apgd, the batched L-BFGS behind stAdv,
and the registry that puts every attack behind one call and one result type.

May import: the ground floor, :mod:`flowbound.threat`, :mod:`flowbound.networks`.
"""
