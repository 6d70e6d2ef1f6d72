"""Pure ``nn.Module`` models (no Lightning, no file I/O)."""

from flow_omni.models.flow_head import FlowHead, FlowHeadConfig
from flow_omni.models.ode import SOLVERS, fixed_grid_loop, integrate

__all__ = ["FlowHead", "FlowHeadConfig", "SOLVERS", "fixed_grid_loop", "integrate"]
