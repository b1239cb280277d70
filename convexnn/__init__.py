"""convexnn: two-layer ReLU networks trained to global optimality through their convex reformulation."""

from . import baselines as baselines
from . import certificates as certificates
from . import linalg as linalg
from . import losses as losses
from . import operators as operators
from . import options as options
from . import path as path
from . import patterns as patterns
from . import progress as progress
from . import prox as prox
from . import sharding as sharding
from .baselines import train_network as train_network
from .certificates import lam_max as lam_max
from .cones import ConeDecomposition as ConeDecomposition
from .cones import cone_decompose as cone_decompose
from .losses import CrossEntropy as CrossEntropy
from .losses import Logistic as Logistic
from .losses import Squared as Squared
from .networks import Network as Network
from .networks import ReluInterval as ReluInterval
from .networks import network_objective as network_objective
from .networks import relu_interval as relu_interval
from .networks import to_network as to_network
from .options import ADMMOptions as ADMMOptions
from .options import ALOptions as ALOptions
from .options import FistaOptions as FistaOptions
from .options import GatedOptions as GatedOptions
from .options import NewtonOptions as NewtonOptions
from .options import PolishOptions as PolishOptions
from .options import StallOptions as StallOptions
from .path import lam_grid as lam_grid
from .path import plot_path as plot_path
from .path import solve_path as solve_path
from .patterns import activation_masks as activation_masks
from .patterns import deduplicate_masks as deduplicate_masks
from .patterns import enumerate_masks as enumerate_masks
from .patterns import sample_gates as sample_gates
from .sharding import RowSharded as RowSharded
from .sharding import shard_rows as shard_rows
from .solution import Solution as Solution
from .solution import Status as Status
from .solvers.gated import solve_gated as solve_gated
from .solvers.relu import solve_relu as solve_relu

__version__ = "0.1.0"
