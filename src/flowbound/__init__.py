"""flowbound: the paper 'Provable defenses against spatially transformed
adversarial inputs: impossibility and possibility results', reproduced.

Modules: data (MNIST), warp (Eq. 1), geometry (Prop. 1, 2), loss (Eq. 4, 7),
models (networks, variants, training), experiments and plots (one function
per figure), book (the build), cli (the ``flowbound`` command).
"""

__version__ = "0.1.0"
