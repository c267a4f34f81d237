"""flowbound: the paper 'Provable defenses against spatially transformed
adversarial inputs: impossibility and possibility results', reproduced.

Modules: data (MNIST), warp (Eq. 1), geometry (Prop. 1, 2), loss (Eq. 4, 7),
models (networks, variants, training), experiments and plots (one function
per figure), book (the build), cli (the ``flowbound`` command).

"Readings table, point N" in a docstring is row N of the table "Readings we
had to choose" in the book's Reproduction report (``book/report.md``, anchor
``readings``): the reading of the paper that the code implements there.
"""

__version__ = "0.1.0"
