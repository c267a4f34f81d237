"""Training: the variant registry, the objectives (plain, adversarial, SDP-NN,
against the per-digit certificate), the training loop and stacked training.

May import: every layer below (certificates for SDP-NN and f_cert, attacks for
adversarial training).
"""
