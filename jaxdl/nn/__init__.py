"""Flax layers and activations, one paper family per subpackage.

- `jaxdl.nn.activations`: StableMax (Prieto et al., ICLR 2025)
- `jaxdl.nn.kan`: Kolmogorov-Arnold layers (KAN, ReLU-KAN, AF-KAN, S-KAN, GR-KAN/KAT)
- `jaxdl.nn.ssm`: state-space layers S4D, S5 and their PTD initialisation
- `jaxdl.nn.sdm`: the Similarity-Distance-Magnitude output layer
"""

from jaxdl.nn import kan, sdm, ssm
from jaxdl.nn.activations import log_stablemax, stablemax
from jaxdl.nn.kan import AFKAN, GRKAN, KAN, KATMLP, KANLinear, SelectableKAN
from jaxdl.nn.sdm import SDMHead, fit_sdm, nearest_neighbours, restore_head, save_head, sdm_activation
from jaxdl.nn.ssm import S4D, S5, SequenceModel
