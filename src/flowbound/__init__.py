"""flowbound: the paper 'Provable defenses against spatially transformed
adversarial inputs: impossibility and possibility results', reproduced.

The package is laid out by concern; each layer imports only the layers listed
before it (a test checks the import graph):

- the ground floor, here: ``checks`` (what numeric entry points accept),
  ``device`` (where tensors live, batch sizes), ``cache`` (atomic, verified),
  ``stats`` (intervals and verdicts), ``progress``, ``data`` (MNIST), ``blas``
  (MKL's kernels on AMD CPUs), ``registry`` (the named-items dict of every registry);
- :mod:`flowbound.threat`: the warp (Eq. 1), M and lambda (Prop. 1, 2), the losses
  (Eq. 2, 4, 7) and the threat sets;
- :mod:`flowbound.networks`: the architectures and the one view of their layers;
- :mod:`flowbound.attacks`: stAdv, PGD, flow_pgd, flow_apgd and their registry;
- :mod:`flowbound.certificates`: the paper's bounds and SDP solver, Theorems 1-2,
  the per-digit certificate, the bound registry;
- :mod:`flowbound.training`: the variants, their objectives, the training loops;
- :mod:`flowbound.book`: profiles, cached networks, experiments, figures, the build
  and the ``flowbound`` command.

"Readings table, point N" in a docstring is row N of the table "Readings we
had to choose" in the book's Reproduction report (``book/report.md``, anchor
``readings``): the reading of the paper that the code implements there.
"""

__version__ = "0.1.0"
