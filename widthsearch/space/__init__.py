"""Channel space: units found automatically, dynamic widths, exact export, fast costs."""
from widthsearch.space.channel_space import ChannelSpace, Config
from widthsearch.space.supernet import Supernet
from widthsearch.space.units import Cost, Unit, make_choices

__all__ = ["ChannelSpace", "Config", "Cost", "Supernet", "Unit", "make_choices"]
