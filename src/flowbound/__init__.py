"""flowbound: the paper 'Provable defenses against spatially transformed
adversarial inputs: impossibility and possibility results', reproduced.

Modules, by layer:

- inputs and geometry: data (MNIST), warp (Eq. 1), geometry (Prop. 1, 2),
  loss (Eq. 4, 7), checks (what numeric entry points accept);
- networks: models (architectures, cached training), zoo (the variant
  registry), nets (the one view of a network's layers), training_losses and
  sdp_training (the variants' objectives), eigs (Lanczos for SDP-NN),
  registry (the named-items dict both registries use);
- attacks and bounds: attacks (stAdv, PGD, flow_pgd), lbfgs (batched
  L-BFGS), impossibility (Theorems 1-2, Algorithms 1-2), bounds (the
  Frobenius, spectral and SDP formulas), certify (the bound registry, the
  certified 0/1 loss), local_bounds (per-digit certificates, beyond the paper);
- the book: experiments and plots (one function per figure), stats (intervals
  and verdicts), glue (a chapter's summary in one call), cache, profiles,
  device, book (the build), cli (the ``flowbound`` command).

"Readings table, point N" in a docstring is row N of the table "Readings we
had to choose" in the book's Reproduction report (``book/report.md``, anchor
``readings``): the reading of the paper that the code implements there.
"""

__version__ = "0.1.0"
