"""Width-search methods, each a thin layer over the channel space, training and search code.

``METHODS`` maps a method's name (the CLI's ``widthsearch run --method``) to the function that
runs it end to end: ``fn(settings, out_dir, *, resume, progress, echo) -> result``.
"""
from typing import Any, Callable, Dict

from widthsearch.errors import lookup
from widthsearch.methods.autoslim import run_autoslim
from widthsearch.methods.bcnet import run_bcnet
from widthsearch.methods.netadjust import run_netadjust
from widthsearch.methods.spnet_experiment import run_spnet_experiment

METHODS: Dict[str, Callable[..., Dict[str, Any]]] = {
    "autoslim": run_autoslim,
    "bcnet": run_bcnet,
    "netadjust": run_netadjust,
    "spnet": run_spnet_experiment,  # SP-Net against S-Net; `widthsearch spnet` runs SP-Net alone
}


def method(name: str) -> Callable[..., Dict[str, Any]]:
    """The run function registered as ``name``; ``UserError`` listing the choices otherwise."""
    return lookup(METHODS, name, "method")


__all__ = ["METHODS", "method"]
