"""cdvd: CDVD-TSP video deblurring with PyTorch Lightning and Hydra."""

from cdvd.checkpoints import CheckpointError, load_flow_weights, load_model, load_weights, save_original
from cdvd.models import CDVDTSP, CascadeOutput
from cdvd.tracking import register_resolvers

# ${cdvd_run_name:...} names sweep folders (configs/hydra/default.yaml) for every entry point
register_resolvers()

__version__ = "0.1.0"

__all__ = [
    "CDVDTSP",
    "CascadeOutput",
    "CheckpointError",
    "load_flow_weights",
    "load_model",
    "load_weights",
    "save_original",
]
