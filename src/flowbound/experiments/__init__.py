"""One function per figure or table: computes (and caches) what a chapter shows.

Each function takes a profile (name or dict) and returns plain data; the
drawing lives in :mod:`flowbound.plots`. Modules follow the book's chapters.
"""

from .background import (
    geometry_summary,
    jacobians_at_zero,
    midpoint_convergence,
    prop1_check,
    random_ellipsoid_flows,
    warp_demo,
)
from .certify_digits import (
    at_eps,
    cert_comparison,
    certified_accuracy,
    largest_eps,
    local_summary,
    local_table,
)
from .impossibility import (
    LowerBoundSummary,
    beyond_the_paper,
    convergence_curves,
    convergence_summary,
    figure2_summary,
    figure2_table,
    figure8_table,
    growth_beyond,
    growth_shape,
    linear_lower_bounds,
    lower_bound_summary,
    lower_bounds,
    pairs_of,
    rounds_to,
)
from .intro import evaluation_table, figure1
from .possibility import (
    aabb_illustration,
    attack_vs_certificate,
    budget_attack,
    gap_table,
    objective_comparison,
    ranks_over_seeds,
    sdp_robustness_claim,
    sdp_tightness_claim,
    stadv_vs_tau,
    zero_one_losses,
    zero_one_summary,
    zero_one_table,
)
from .report import claims

__all__ = [
    "LowerBoundSummary",
    "aabb_illustration",
    "at_eps",
    "attack_vs_certificate",
    "beyond_the_paper",
    "budget_attack",
    "cert_comparison",
    "certified_accuracy",
    "claims",
    "convergence_curves",
    "convergence_summary",
    "figure2_summary",
    "figure2_table",
    "figure8_table",
    "gap_table",
    "evaluation_table",
    "figure1",
    "geometry_summary",
    "growth_beyond",
    "growth_shape",
    "jacobians_at_zero",
    "largest_eps",
    "local_summary",
    "local_table",
    "linear_lower_bounds",
    "lower_bound_summary",
    "lower_bounds",
    "midpoint_convergence",
    "objective_comparison",
    "pairs_of",
    "prop1_check",
    "random_ellipsoid_flows",
    "ranks_over_seeds",
    "rounds_to",
    "sdp_robustness_claim",
    "sdp_tightness_claim",
    "stadv_vs_tau",
    "warp_demo",
    "zero_one_losses",
    "zero_one_summary",
    "zero_one_table",
]
