"""Shared defaults of every shoprec component: one image, no pip install at start.

Lightweight components (not container components) run unchanged under kfp.local's
SubprocessRunner and on a cluster, where the image already holds shoprec and kfp.
"""

import functools

from kfp import dsl

from shoprec.config import DEFAULT_IMAGE

shoprec_component = functools.partial(
    dsl.component, base_image=DEFAULT_IMAGE, install_kfp_package=False
)
