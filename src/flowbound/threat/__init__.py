"""The threat model: the bilinear warp and its Jacobians (Eq. 1), M, M^T M and
lambda (Prop. 1, 2), l_diff and l_adv (Eq. 2, 4, 7, 13), and the threat sets.

May import: the ground floor (``flowbound.checks``, ...). Imported by every layer above.
"""
