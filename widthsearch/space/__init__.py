"""Channel space: units found automatically, dynamic widths, exact export, fast costs."""
from widthsearch.space.channel_space import ChannelSpace, Config
from widthsearch.space.spec import SpaceSpec, build_supernet
from widthsearch.space.subnet import Subnet, as_subnet
from widthsearch.space.supernet import Supernet
from widthsearch.space.units import Cost, Unit, make_choices

__all__ = [
    "ChannelSpace", "Config", "Cost", "SpaceSpec", "Subnet", "Supernet", "Unit", "as_subnet", "build_supernet",
    "make_choices",
]
