"""Experts, the Bayesian router and the curiosity-routed mixture (DESIGN §4)."""

from qmoe.models.expert import Expert
from qmoe.models.moe import MixtureOfExperts, MoEOutput, curiosity_routing, entropy_routing
from qmoe.models.router import Router

__all__ = ["Expert", "Router", "MixtureOfExperts", "MoEOutput", "curiosity_routing", "entropy_routing"]
